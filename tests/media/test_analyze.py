"""``sessionguard analyze`` on WebM (VP8 + Opus) and MP4 (H.264 + AAC) files the tests write."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from monitor.cli import main
from monitor.commands.analyze import analyze_file
from monitor.mediafile import AudioItem, VideoItem, decode, probe
from signals.errors import MediaError
from tests.media import corpus_video as corpus
from tests.media.corpus_audio import write_wav

write_av = corpus.write_media_file


@pytest.fixture(scope="module")
def webm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "frozen.webm"
    write_av(path, corpus.clip_frozen(0).frames, "webm", "libvpx", "libopus")
    return path


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "two.mp4"
    frames = [np.ascontiguousarray(np.pad(f, ((0, 0), (0, 0), (0, 0)))) for f in
              corpus.clip_two_people(0, dur=6.0).frames]
    write_av(path, frames, "mp4", "libx264", "aac")
    return path


def test_webm_json_lines(webm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(webm), "--json"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""                      # no progress bar when stderr is not a TTY
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines, "expected at least the frozen episode"
    for obj in lines:
        assert set(obj) == {"signal", "t", "end", "confidence", "evidence"}
        assert 0 <= obj["confidence"] <= 1 and obj["end"] >= obj["t"]
    frozen = [o for o in lines if o["signal"] == "video.frozen"]
    assert len(frozen) == 1
    assert frozen[0]["t"] == pytest.approx(2.0, abs=0.5)
    assert frozen[0]["end"] == pytest.approx(7.0, abs=0.4)
    assert [o["t"] for o in lines] == sorted(o["t"] for o in lines)


def test_mp4_human_output(mp4: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(mp4)]) == 0
    out = capsys.readouterr().out
    assert "video.extra_person" in out and "confidence" in out and "faces=2" in out


def test_analyze_file_feeds_both_analyzers(mp4: Path) -> None:
    result = analyze_file(mp4)
    assert result.video_frames == pytest.approx(30, abs=2)   # 6 s at the 5 fps cheap rate
    assert result.audio_chunks > 0
    assert result.duration == pytest.approx(6.0, abs=0.2)
    assert all(d.end is not None for d in result.detections)


def test_analyze_hands_colour_to_an_object_model(webm: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from signals.media.params import MediaParams, ObjectParams, VideoParams
    from tests.media.test_video_units import _fixed_output_model

    model = tmp_path / "phone.onnx"
    _fixed_output_model(model, 64, [([32, 32, 30, 40], 67, 0.9)])
    params = MediaParams(video=VideoParams(objects=ObjectParams(model=str(model), input_size=64)))
    import monitor.commands.analyze as analyze_module

    shapes: set[tuple[int, ...]] = set()

    def spying_decode(*args: object, **kwargs: object) -> object:
        for item in decode(*args, **kwargs):  # type: ignore[arg-type]
            if isinstance(item, VideoItem):
                shapes.add(item.frame.shape)
            yield item

    monkeypatch.setattr(analyze_module, "decode", spying_decode)
    result = analyze_file(webm, params)
    assert any(d.signal == "video.phone" for d in result.detections)
    assert shapes and all(len(s) == 3 for s in shapes)  # colour, not luma
    shapes.clear()
    analyze_file(webm)
    assert shapes and all(len(s) == 2 for s in shapes)  # no model: luma only
    colour = [i.frame.shape for i in decode(webm, audio=False, colour=True)][:3]
    assert all(len(s) == 3 and s[2] == 3 for s in colour)


def test_decoder_downscales_and_times_frames(tmp_path: Path) -> None:
    path = tmp_path / "big.webm"
    big = [np.ascontiguousarray(np.repeat(np.repeat(f, 2, 0), 2, 1))
           for f in corpus.clip_person(0, dur=1.0).frames]
    path.write_bytes(corpus.frames_to_bytes(big))
    info = probe(path)
    assert (info.width, info.height, info.has_video, info.has_audio) == (640, 480, True, False)
    items = list(decode(path, max_width=320))
    assert all(isinstance(i, VideoItem) and i.frame.shape == (240, 320) for i in items)
    assert [round(i.t, 2) for i in items] == [round(k / 10, 2) for k in range(10)]
    assert not any(isinstance(i, AudioItem) for i in items)
    skipped = list(decode(path, want_video=lambda t: t >= 0.5))
    assert len(skipped) == 5


@pytest.fixture(scope="module")
def sideways(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[np.ndarray]]:
    """Two people, stored turned a quarter counter-clockwise as a phone held upright stores
    them: once with the display rotation that turns them back, once without it."""
    upright = corpus.clip_two_people(3, dur=8.0).frames
    stored = [np.ascontiguousarray(np.rot90(f)) for f in upright]
    folder = tmp_path_factory.mktemp("phone")
    plain = folder / "sideways.mp4"
    write_av(plain, stored, "mp4", "libx264", "aac")
    phone = folder / "phone.mp4"
    phone.write_bytes(corpus.set_display_rotation(plain.read_bytes(), 90))
    return phone, plain, upright


def test_a_phone_recording_is_analysed_upright(
        sideways: tuple[Path, Path, list[np.ndarray]]) -> None:
    phone, plain, upright = sideways
    pictures = [i for i in decode(phone, audio=False) if isinstance(i, VideoItem)]
    assert pictures and all(i.frame.shape == (240, 320) for i in pictures)
    assert all(i.frame.flags["C_CONTIGUOUS"] for i in pictures)
    first = cv2.cvtColor(upright[0], cv2.COLOR_BGR2GRAY).astype(np.float64)
    assert np.corrcoef(first.ravel(), pictures[0].frame.astype(np.float64).ravel())[0, 1] > 0.95
    colour = [i for i in decode(phone, audio=False, colour=True) if isinstance(i, VideoItem)]
    assert colour[0].frame.shape == (240, 320, 3)
    # without the display rotation the pictures stay as stored: nothing is turned blindly
    stored = [i for i in decode(plain, audio=False) if isinstance(i, VideoItem)]
    assert stored[0].frame.shape == (320, 240)
    # two faces lying on their side are no face at all; upright, they are two people
    assert {d.signal for d in analyze_file(plain).detections} == {"video.no_person"}
    assert {d.signal for d in analyze_file(phone).detections} == {"video.extra_person"}


def test_a_turned_picture_is_fitted_by_its_upright_width(tmp_path: Path) -> None:
    stored = [np.ascontiguousarray(np.rot90(cv2.resize(f, (640, 480))))
              for f in corpus.clip_person(1, dur=1.0).frames]
    plain = tmp_path / "tall.mp4"
    write_av(plain, stored, "mp4", "libx264", "aac")
    phone = tmp_path / "phone.mp4"
    phone.write_bytes(corpus.set_display_rotation(plain.read_bytes(), 270))
    # stored 480 wide and 640 tall, shown 640 wide: at most 320 wide once shown (upside down
    # here: 270 degrees clockwise is one quarter turn too many, and that is what a player shows)
    got = next(i for i in decode(phone, audio=False, max_width=320) if isinstance(i, VideoItem))
    assert got.frame.shape == (240, 320)


def test_a_raw_stream_without_timestamps_is_timed_by_frame_rate(tmp_path: Path) -> None:
    # a raw H.264 elementary stream (what some recorders dump) carries no timestamps: every
    # frame used to be taken at t=0, so one picture was analysed and the rest dropped
    clip = corpus.clip_frozen(0)
    raw = tmp_path / "call.h264"
    with av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=clip.fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"x264-params": "mbtree=0"}  # the same bytes at every encode
        for frame in clip.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    times = [i.t for i in decode(raw, audio=False)]
    assert len(times) == len(clip.frames)
    assert times == pytest.approx([i / clip.fps for i in range(len(clip.frames))])
    result = analyze_file(raw)
    assert result.video_frames >= 40
    [frozen] = [d for d in result.detections if d.signal == "video.frozen"]
    [(start, end)] = clip.labels["video.frozen"]
    assert start - 0.5 <= frozen.t and frozen.end is not None and frozen.end <= end + 0.5


def test_unreadable_file_is_one_sentence(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "notes.webm"
    bad.write_bytes(b"this is not a video" * 100)
    assert main(["analyze", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sessionguard analyze: ") and "not a media file" in err
    assert "\n" not in err and "Traceback" not in err
    assert main(["analyze", str(tmp_path / "missing.mp4")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path)]) == 1
    assert "directory" in capsys.readouterr().err
    with pytest.raises(MediaError):
        analyze_file(bad)


def test_truncated_file_does_not_crash(webm: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    cut = tmp_path / "cut.webm"
    cut.write_bytes(webm.read_bytes()[: webm.stat().st_size // 2])
    code = main(["analyze", str(cut), "--json"])
    captured = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in captured.err
    for line in captured.out.splitlines():
        json.loads(line)


def test_a_file_cut_short_is_analysed_as_far_as_it_goes(webm: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    # the header still declares the whole duration; episodes must not be stretched to it
    declared = probe(webm).duration
    assert declared is not None and declared > 5
    cut = tmp_path / "cut.webm"
    cut.write_bytes(webm.read_bytes()[: webm.stat().st_size // 2])
    result = analyze_file(cut)
    assert result.declared == pytest.approx(declared)
    assert 0 < result.duration < declared - 1
    assert all(d.end is not None and d.end <= result.duration + 1e-6
               for d in result.detections)
    assert main(["analyze", str(cut)]) == 0
    err = capsys.readouterr().err
    assert f"decoding stopped at {result.duration:.1f} s of the {declared:.1f} s" in err
    assert err.count("\n") == 1
    # a whole file declares what it holds: no note
    assert analyze_file(webm).declared is None
    assert main(["analyze", str(webm)]) == 0
    assert capsys.readouterr().err == ""


def test_a_file_with_nothing_decodable_is_an_error(webm: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # the container header is there, no frame is: "no media signals in 0 s" would mislead
    head = tmp_path / "head.webm"
    head.write_bytes(webm.read_bytes()[:600])
    with pytest.raises(MediaError, match="no audio or video could be decoded"):
        analyze_file(head)
    assert main(["analyze", str(head)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("sessionguard analyze: ") and "\n" not in err


def test_progress_bar_on_a_terminal(webm: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    fake = Tty()
    monkeypatch.setattr(sys, "stderr", fake)
    assert main(["analyze", str(webm), "--json"]) == 0
    assert "analysing [" in fake.getvalue() and "100%" in fake.getvalue()


def test_console_script_end_to_end(webm: Path) -> None:
    exe = Path(sys.executable).with_name("sessionguard")
    proc = subprocess.run([str(exe), "analyze", str(webm), "--json"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert any(json.loads(line)["signal"] == "video.frozen" for line in proc.stdout.splitlines())


def _wav(path: Path, rate: int, seconds: float = 1.0) -> Path:
    """A quiet tone over a little noise, ``rate`` samples a second, as a 16-bit WAV."""

    rng = np.random.default_rng(rate)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.05 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.001, len(t))
    return write_wav(path, x, rate)


@pytest.mark.parametrize("rate,noted", [(8_000, "holds nothing above 4000 Hz"),
                                        (11_025, "hears only 3000-5512 Hz of it"),
                                        (16_000, None), (48_000, None)])
def test_audio_too_narrow_for_the_shutter_band_gets_a_note(
        rate: int, noted: str | None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # a telephone recording cannot carry a shutter's clicks: "no media signals" alone would
    # read as "no shutter"
    path = _wav(tmp_path / f"tone-{rate}.wav", rate)
    assert analyze_file(path).audio_rate == rate
    assert main(["analyze", str(path)]) == 0
    captured = capsys.readouterr()
    assert "no media signals" in captured.out
    if noted is None:
        assert captured.err == ""
    else:
        assert noted in captured.err and "audio.shutter" in captured.err
        assert captured.err.count("\n") == 1


def test_the_narrow_band_note_follows_the_shutter_params() -> None:
    from signals.media.audio_params import ShutterParams
    from signals.media.audio_shutter import narrow_band_note

    assert narrow_band_note(8_000, ShutterParams(enabled=False)) is None
    assert narrow_band_note(8_000, ShutterParams(band_hz=(1000.0, 3500.0))) is None
    assert "hears only 3000-4000 Hz of it" in (narrow_band_note(8_000, ShutterParams()) or "")
    assert "hears nothing of it" in (narrow_band_note(6_000, ShutterParams()) or "")
    assert narrow_band_note(15_000, ShutterParams()) is None  # 7.5 kHz: the whole band


@pytest.mark.parametrize("cutoff,noted", [(3_400, True), (None, False)])
def test_48_khz_audio_that_carries_only_a_telephone_band_gets_a_note(
        cutoff: int | None, noted: bool, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # a phone call recorded at 48 kHz: the rate says nothing, the content does
    from scipy import signal as sps

    rng = np.random.default_rng(12)
    x = rng.normal(0, 0.05, 48_000 * 5)
    if cutoff is not None:
        x = sps.sosfilt(sps.butter(10, cutoff, fs=48_000, output="sos"), x)
    path = write_wav(tmp_path / "call.wav", x, 48_000)
    result = analyze_file(path)
    assert result.audio_band == ("narrowband" if noted else "wideband")
    assert main(["analyze", str(path)]) == 0
    err = capsys.readouterr().err
    if noted:
        assert "holds almost nothing above 6.5 kHz" in err and "audio.shutter" in err
        assert err.count("\n") == 1
    else:
        assert err == ""
