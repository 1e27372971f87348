"""``sessionguard analyze`` on awkward files: damaged, joined, odd names, pipes, tiny or wide
pictures, unusual audio. Every file is written here with PyAV, small and seconds long."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from monitor.cli import main
from monitor.commands.analyze import analyze_file
from monitor.mediafile import AudioItem, VideoItem, decode, probe
from signals.errors import MediaError

Signal = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


def _tone(t: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    rng = np.random.default_rng(len(t))
    return 0.1 * np.sin(2 * np.pi * 440 * t) + rng.normal(0, 0.003, len(t))


def _picture(w: int, h: int, i: int) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(i)
    ramp = (np.indices((h, w)).sum(0) * 3 + i * 5) % 200 + 20
    noisy = ramp[..., None] + rng.integers(-8, 9, (h, w, 3))
    picture: npt.NDArray[np.uint8] = np.clip(noisy, 0, 255).astype(np.uint8)
    return picture


def _mux_audio(c: Any, a: Any, rate: int, secs: float, layout: str = "mono",
               signal: Signal = _tone, start: int = 0) -> None:
    fmt = a.codec_context.codec.audio_formats[0].name
    x = signal(np.arange(int(rate * secs)) / rate)
    step = a.codec_context.frame_size or 1024
    channels = av.AudioLayout(layout).nb_channels
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=rate)
    for i in range(0, len(x), step):
        data = np.tile(x[i:i + step], (channels, 1)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start + i, Fraction(1, rate)
        for out in resampler.resample(frame):
            for packet in a.encode(out):
                c.mux(packet)
    for packet in a.encode():
        c.mux(packet)


def write_clip(path: Path, vcodec: str | None = "libvpx", size: tuple[int, int] = (96, 72),
               secs: float = 2.0, acodec: str | None = None, rate: int = 48_000,
               fmt: str | None = None, options: dict[str, str] | None = None,
               first_pts: int = 0, layout: str = "mono", signal: Signal = _tone,
               cover: bool = False) -> Path:
    """A small file: ``secs`` of 10 fps moving noise (or one cover picture) and/or a tone."""
    with av.open(str(path), "w", format=fmt, options=options or {}) as c:
        a = c.add_stream(acodec, rate=rate, layout=layout) if acodec else None
        if vcodec is not None:
            v: Any = c.add_stream(vcodec, rate=1 if cover else 10)
            v.width, v.height = size
            v.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
            if vcodec == "libx264":  # the same bytes at every encode (see corpus_video)
                v.options = {"x264-params": "mbtree=0"}
            if cover:
                v.disposition = av.stream.Disposition.attached_pic
            for i in range(1 if cover else int(secs * 10)):
                frame = av.VideoFrame.from_ndarray(_picture(*size, i), format="rgb24")
                frame.pts, frame.time_base = first_pts + i, Fraction(1, 10)
                for packet in v.encode(frame.reformat(format=v.pix_fmt)):
                    c.mux(packet)
            for packet in v.encode():
                c.mux(packet)
        if a is not None:
            _mux_audio(c, a, rate, secs, layout, signal)
    return path


def _notes(capsys: pytest.CaptureFixture[str]) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line]


# --- damaged files (F1) -------------------------------------------------------------------

def test_a_cut_mp4_is_analysed_up_to_the_cut(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # the index at the front (faststart) and the data cut in half: the last AAC packet is
    # partial, which the decoder rejects
    whole = write_clip(tmp_path / "whole.mp4", "libx264", secs=8, acodec="aac",
                       options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = analyze_file(cut)
    assert result.video_frames > 5 and result.audio_chunks > 5
    assert result.declared == pytest.approx(8.0, abs=0.1) and result.duration < 6
    assert main(["analyze", str(cut), "--json"]) == 0
    notes = _notes(capsys)
    assert any("decoding stopped at" in n for n in notes)


def test_garbage_inside_a_file_skips_the_damaged_packets(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    path = write_clip(tmp_path / "damaged.mp4", "libx264", secs=8, acodec="aac")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4000] = np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    result = analyze_file(path)
    assert result.duration == pytest.approx(8.0, abs=0.2) and result.declared is None
    assert any("damaged packet(s)" in n and "were skipped" in n for n in result.notes)
    assert main(["analyze", str(path)]) == 0
    [note] = _notes(capsys)
    assert note.startswith("sessionguard analyze: note: ") and str(path) in note


def test_a_file_whose_every_packet_fails_is_still_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_clip(tmp_path / "noise.m4a", None, acodec="aac", fmt="mp4")
    data = bytearray(path.read_bytes())
    start, end = data.find(b"mdat") + 4, data.find(b"moov")
    assert 0 < start < end  # the payload lies between the two boxes
    data[start:end] = np.random.default_rng(0).integers(0, 256, end - start, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match=r"no audio or video could be decoded.*packets failed"):
        analyze_file(path)
    assert main(["analyze", str(path)]) == 1
    [err] = _notes(capsys)
    assert str(path) in err


# --- audio that changes format, runs long or holds nonsense (F2, F7, F8, F12) ---------------

@pytest.mark.parametrize("second", [{"rate": 8_000}, {"layout": "stereo"}])
def test_joined_recordings_with_another_audio_format(second: dict[str, Any], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    # two ADTS files, one after the other, as `cat a.aac b.aac` makes them
    one = write_clip(tmp_path / "one.aac", None, acodec="aac", fmt="adts", secs=3)
    two = write_clip(tmp_path / "two.aac", None, acodec="aac", fmt="adts", secs=3, **second)
    joined = tmp_path / "joined.aac"
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    chunks = [i for i in decode(joined) if isinstance(i, AudioItem)]
    assert {c.rate for c in chunks} == {48_000, second.get("rate", 48_000)}
    seconds = sum(len(c.samples) / c.rate for c in chunks)
    assert seconds == pytest.approx(6.0, abs=0.3)  # with the encoder's priming samples
    assert main(["analyze", str(joined), "--json"]) == 0
    _notes(capsys)


def test_joined_mp3s_skip_the_seam_and_change_rate(tmp_path: Path) -> None:
    one = write_clip(tmp_path / "one.mp3", None, acodec="libmp3lame", rate=44_100)
    two = write_clip(tmp_path / "two.mp3", None, acodec="libmp3lame", rate=16_000)
    joined = tmp_path / "joined.mp3"
    joined.write_bytes(one.read_bytes() + two.read_bytes())
    result = analyze_file(joined)
    assert result.audio_rate == 16_000
    assert any("damaged packet(s)" in n for n in result.notes)


def test_one_long_audio_packet_is_split(tmp_path: Path) -> None:
    # 70 s of PCM in a single Matroska block: the analyzer takes at most 60 s a chunk
    rate = 8_000
    path = tmp_path / "long.mka"
    with av.open(str(path), "w") as c:
        a: Any = c.add_stream("pcm_s16le", rate=rate, layout="mono")
        x = (np.sin(np.arange(rate * 70) * 0.05) * 3000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(x, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*a.encode(frame), *a.encode()]:
            c.mux(packet)
    items = [i for i in decode(path) if isinstance(i, AudioItem)]
    assert len(items) == 7 and all(len(i.samples) == 10 * rate for i in items)
    assert [i.t for i in items] == pytest.approx([10.0 * k for k in range(7)])
    assert analyze_file(path).duration == pytest.approx(70.0)


def _float_wav(path: Path, signal: Signal) -> Path:
    return write_clip(path, None, acodec="pcm_f32le", secs=3, signal=signal)


def test_extreme_float_audio_is_held_to_full_scale(tmp_path: Path) -> None:
    huge = _float_wav(tmp_path / "huge.wav",
                      lambda t: 1e30 * np.sign(np.sin(2 * np.pi * 100 * t)))
    gap = _float_wav(tmp_path / "nan.wav",
                     lambda t: np.where((t > 1) & (t < 1.001), np.nan, _tone(t)))
    for path in (huge, gap):
        samples = np.concatenate([i.samples for i in decode(path)
                                  if isinstance(i, AudioItem)])
        assert np.isfinite(samples).all() and np.abs(samples).max() <= 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy's overflow warnings on inf / NaN
            assert analyze_file(path).audio_chunks > 0


# --- what the detectors cannot use: no decoder, tiny pictures, odd rates (F3, F6, F11) ------

def test_audio_rates_the_detectors_cannot_take(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    high = write_clip(tmp_path / "high.wav", None, acodec="pcm_s16le", rate=384_000)
    assert analyze_file(high).audio_rate == 192_000  # resampled to the highest they take
    low = write_clip(tmp_path / "low.wav", None, acodec="pcm_s16le", rate=4_000)
    assert main(["analyze", str(low)]) == 1
    [err] = _notes(capsys)
    assert str(low) in err and "4000 Hz" in err
    both = write_clip(tmp_path / "both.mkv", "ffv1", acodec="pcm_s16le", rate=4_000)
    result = analyze_file(both)
    assert result.video_frames > 0 and result.audio_chunks == 0
    assert main(["analyze", str(both)]) == 0
    [note] = _notes(capsys)
    assert "4000 Hz" in note and "its audio was not analysed" in note



@pytest.mark.parametrize("patch,kept", [((b"V_VP8", b"V_QQQ"), "audio"),
                                        ((b"A_OPUS", b"A_QQQQ"), "video")])
def test_a_stream_ffmpeg_cannot_decode_is_skipped(patch: tuple[bytes, bytes], kept: str,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ok = write_clip(tmp_path / "ok.webm", acodec="libopus", secs=3)
    path = tmp_path / "odd.webm"
    path.write_bytes(ok.read_bytes().replace(*patch))
    result = analyze_file(path)
    assert (result.video_frames > 0, result.audio_chunks > 0) == (kept == "video",
                                                                  kept == "audio")
    assert main(["analyze", str(path)]) == 0
    [note] = _notes(capsys)
    assert "has no decoder" in note and str(path) in note


def test_a_file_with_no_decodable_stream_is_an_error(tmp_path: Path) -> None:
    ok = write_clip(tmp_path / "ok.webm", acodec="libopus")
    path = tmp_path / "odd.webm"
    path.write_bytes(ok.read_bytes().replace(b"V_VP8", b"V_QQQ").replace(b"A_OPUS", b"A_QQQQ"))
    assert probe(path).undecodable == ("video", "audio")
    with pytest.raises(MediaError, match=r"odd\.webm cannot be analysed: its video stream has "
                                         r"no decoder.* and its audio stream"):
        analyze_file(path)


def test_a_wide_banner_is_analysed(tmp_path: Path) -> None:
    # 1920x80 at our 320 working width would be 320x13: the height is kept at 16
    path = write_clip(tmp_path / "banner.mkv", "ffv1", size=(1920, 80), secs=1)
    assert analyze_file(path).video_frames > 0
    assert {i.frame.shape for i in decode(path) if isinstance(i, VideoItem)} == {(16, 320)}


def test_a_tiny_picture_is_skipped_and_the_audio_analysed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_clip(tmp_path / "tiny.mkv", "ffv1", size=(8, 8), secs=3, acodec="pcm_s16le")
    result = analyze_file(path)
    assert result.video_frames == 0 and result.audio_chunks > 0
    assert main(["analyze", str(path)]) == 0
    [note] = _notes(capsys)
    assert "8x8 pixels" in note and "its video was not analysed" in note
    alone = write_clip(tmp_path / "alone.mkv", "ffv1", size=(8, 8))
    with pytest.raises(MediaError, match=r"alone\.mkv cannot be analysed: its video is 8x8 "
                                         r"pixels.* and it has no audio"):
        analyze_file(alone)


def test_cover_art_is_not_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_clip(tmp_path / "song.m4a", "mjpeg", size=(8, 8), secs=3, acodec="aac",
                      fmt="mp4", cover=True)
    info = probe(path)
    assert not info.has_video and info.has_audio
    assert analyze_file(path).audio_chunks > 0
    assert main(["analyze", str(path)]) == 0
    assert _notes(capsys) == []


# --- names and kinds of files (F4, F5) -------------------------------------------------------

@pytest.mark.parametrize("name", ["rec-2024-01-01T10:30:00.webm", "pipe:0", "http:x.webm"])
def test_a_file_name_is_never_an_ffmpeg_url(name: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_clip(tmp_path / "clip.webm").rename(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    assert analyze_file(name).video_frames > 0
    assert analyze_file(path).video_frames > 0


@pytest.mark.timeout(30)
def test_a_pipe_is_refused_without_waiting_for_it(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "stream.webm"
    os.mkfifo(fifo)  # nobody writes: opening it to read would wait forever
    assert main(["analyze", str(fifo)]) == 1
    [err] = _notes(capsys)
    assert f"{fifo} is not a regular file" in err


# --- timestamps (F13) ------------------------------------------------------------------------

def test_timestamps_that_start_late_are_no_truncation(tmp_path: Path) -> None:
    # 5 s cut from a longer recording, its timestamps kept (10 s .. 15 s): Matroska declares
    # its last timestamp (15 s) as the duration
    path = write_clip(tmp_path / "late.mkv", "ffv1", secs=5, first_pts=100)
    info = probe(path)
    assert info.duration == pytest.approx(5.0, abs=0.15)
    result = analyze_file(path)
    assert result.declared is None and result.duration == pytest.approx(5.0, abs=0.15)
