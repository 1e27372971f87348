"""``sessionguard analyze`` on awkward files: damaged, joined, odd names, pipes, tiny or wide
pictures, unusual audio. Every file is written here with PyAV, small and seconds long."""

from __future__ import annotations

import os
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
