"""Decoding media files in memory (PyAV): video frames and audio chunks with their times.

:func:`decode` demuxes a file once and yields :class:`VideoItem` (gray ``uint8`` pictures,
full-range luma, downscaled (area averaging) to at most ``max_width``; see
:func:`gray_picture`) and :class:`AudioItem` (float32 mono samples in -1..1 at the file's
rate, at most ``MAX_CHUNK_S`` long) in file order, ``t`` in seconds from the start of the
file. ``want_video(t)`` lets the caller skip converting frames it would drop anyway. Nothing
is written anywhere.

Only regular files are read (a pipe or a device cannot be probed and then decoded, and could
block forever), and always as local files: a name such as ``pipe:0`` or ``rec-10:30.webm``
is never taken for an FFmpeg protocol. Streams FFmpeg has no decoder for, and cover art, are
left out (:attr:`MediaInfo.undecodable`). A packet the decoder rejects (a damaged or cut
file) is skipped and counted in the :class:`DecodeReport` the caller may pass; a demuxer
failure ends the decoding there. Files FFmpeg cannot open raise :class:`MediaError`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt

from signals.errors import MediaError
from signals.media.frames import MIN_SIDE

__all__ = ["MAX_CHUNK_S", "AudioItem", "DecodeReport", "MediaInfo", "VideoItem", "bgr_picture",
           "decode", "gray_picture", "probe"]

#: audio is yielded in chunks of at most this many seconds (a file may hold one long packet)
MAX_CHUNK_S = 10.0


@dataclass(frozen=True, slots=True)
class VideoItem:
    frame: npt.NDArray[np.uint8]
    t: float


@dataclass(frozen=True, slots=True)
class AudioItem:
    samples: npt.NDArray[np.float32]
    rate: int
    t: float


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What :func:`decode` will decode: the first video stream with a decoder (cover art
    aside) and the first such audio stream. ``duration`` is the span the file declares, in
    seconds from its first timestamp; ``undecodable`` names the kinds (``"video"``,
    ``"audio"``) present only in streams FFmpeg has no decoder for."""

    duration: float | None
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    audio_rate: int = 0
    undecodable: tuple[str, ...] = ()


@dataclass(slots=True)
class DecodeReport:
    """What :func:`decode` had to leave out, filled in as it decodes."""

    #: packets the decoder rejected (damaged data, a packet cut short), and its first reason
    bad_packets: int = 0
    first_error: str | None = None
    #: why the demuxer stopped before the end of the file (``None``: it reached the end)
    read_error: str | None = None


def _open(path: str | Path) -> av.container.InputContainer:
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise MediaError(f"{p} does not exist") from None
    except (OSError, ValueError) as exc:
        raise MediaError(f"{p} cannot be read ({_reason(exc)})") from None
    if stat.S_ISDIR(mode):
        raise MediaError(f"{p} is a directory, not a media file")
    if not stat.S_ISREG(mode):
        raise MediaError(f"{p} is not a regular file (a pipe, socket or device); analyze "
                         "reads media files only, so save the stream to a file first")
    try:
        # "file:" and an absolute path: the name is never read as a protocol ("pipe:0")
        return av.open("file:" + os.fspath(p.absolute()), "r")
    except (av.error.FFmpegError, UnicodeError, ValueError) as exc:
        raise MediaError(f"{p} is not a media file FFmpeg can read ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).strip().rstrip(".").splitlines()[0]


def _streams(c: av.container.InputContainer) -> tuple[Any, Any, tuple[str, ...]]:
    """The video and audio stream to decode (``None`` where there is none) and the kinds
    found only in streams without a decoder. Cover art (an attached picture) is no video."""
    videos = [s for s in c.streams.video
              if not s.disposition & av.stream.Disposition.attached_pic]
    v = next((s for s in videos if s.codec_context is not None), None)
    a = next((s for s in c.streams.audio if s.codec_context is not None), None)
    undecodable = tuple(kind for kind, chosen, present in
                        (("video", v, videos), ("audio", a, c.streams.audio))
                        if chosen is None and present)
    return v, a, undecodable


def _declared(c: av.container.InputContainer, v: Any) -> float | None:
    """The span the file declares, in seconds from its first timestamp."""
    duration = c.duration / 1_000_000 if c.duration else None
    if duration is None and v is not None and v.duration and v.time_base:
        duration = float(v.duration * v.time_base)
    start = c.start_time / 1_000_000 if c.start_time else 0.0
    if duration is not None and "matroska" in c.format.name and 0 < start < duration:
        duration -= start  # a Matroska duration is its last timestamp, not the span
    return duration


def probe(path: str | Path) -> MediaInfo:
    """Duration and streams of a media file."""
    with _open(path) as c:
        v, a, undecodable = _streams(c)
        return MediaInfo(_declared(c, v), v is not None, a is not None,
                         v.codec_context.width if v else 0, v.codec_context.height if v else 0,
                         a.codec_context.sample_rate or 0 if a else 0, undecodable)


def decode(
    path: str | Path,
    *,
    video: bool = True,
    audio: bool = True,
    max_width: int = 320,
    want_video: Callable[[float], bool] | None = None,
    colour: bool = False,
    max_rate: int | None = None,
    report: DecodeReport | None = None,
) -> Iterator[VideoItem | AudioItem]:
    """Yield the video frames and audio chunks of ``path`` in file order (pictures as gray
    luma, or BGR with ``colour``; audio above ``max_rate`` resampled to it). Damaged packets
    are skipped and counted in ``report``."""
    report = report if report is not None else DecodeReport()
    with _open(path) as c:
        v, a, _ = _streams(c)
        vs = v if video else None
        as_ = a if audio else None
        if vs is None and as_ is None:
            raise MediaError(f"{path} has no audio or video stream to analyse")
        streams = [s for s in (vs, as_) if s is not None]
        if vs is not None:
            vs.thread_type = "AUTO"
        start = c.start_time / 1_000_000 if c.start_time else 0.0
        mono = _MonoAudio(max_rate)
        # Frames without timestamps (a raw H.264 stream, say) are timed by their order: the
        # frame rate FFmpeg guesses for video, the samples so far for audio.
        frame_s = 1.0 / float(vs.guessed_rate or vs.average_rate or 25) if vs is not None else 0.0
        next_video = next_audio = 0.0
        for packet in _packets(c, streams, report):
            for frame in _frames(packet, report):
                if frame.time is not None:
                    t = max(0.0, float(frame.time) - start)
                else:
                    t = next_video if isinstance(frame, av.VideoFrame) else next_audio
                if isinstance(frame, av.VideoFrame):
                    next_video = round(t + frame_s, 6)
                    if want_video is not None and not want_video(t):
                        continue
                    picture = (bgr_picture(frame, max_width) if colour
                               else gray_picture(frame, max_width))
                    yield VideoItem(picture, t)
                    continue
                next_audio = round(t + frame.samples / max(frame.sample_rate, 1), 6)
                for samples, rate in mono(frame):
                    yield from _chunks(samples, rate, t)


def _packets(c: av.container.InputContainer, streams: list[Any],
             report: DecodeReport) -> Iterator[av.Packet[Any]]:
    """The packets of ``streams``; a demuxer failure ends them (noted in ``report``)."""
    packets = c.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as exc:
            report.read_error = _reason(exc)
            return
        yield packet


def _frames(packet: av.Packet[Any], report: DecodeReport) -> list[av.VideoFrame | av.AudioFrame]:
    """The frames of one packet; none if the decoder rejects it (counted in ``report``)."""
    try:
        frames = packet.decode()
    except av.error.FFmpegError as exc:
        report.bad_packets += 1
        report.first_error = report.first_error or _reason(exc)
        return []
    return [f for f in frames if isinstance(f, av.VideoFrame | av.AudioFrame)]


class _MonoAudio:
    """Audio frames to float32 mono in -1..1, whatever their sample format, layout and rate
    (which may change mid-stream: two recordings joined), rates above ``max_rate`` resampled
    down to it."""

    def __init__(self, max_rate: int | None) -> None:
        self.max_rate = max_rate
        self._setup: tuple[str, str, int] | None = None
        self._resampler: av.AudioResampler | None = None

    def __call__(self, frame: av.AudioFrame) -> Iterator[tuple[npt.NDArray[np.float32], int]]:
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._resampler is None or setup != self._setup:
            rate = (self.max_rate if self.max_rate and frame.sample_rate > self.max_rate
                    else None)
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            self._setup = setup
        for out in self._resampler.resample(frame):
            yield _mono(out), int(out.sample_rate)


def _chunks(samples: npt.NDArray[np.float32], rate: int, t: float) -> Iterator[AudioItem]:
    """``samples`` as audio items of at most :data:`MAX_CHUNK_S` seconds."""
    step = max(1, int(MAX_CHUNK_S * rate))
    for i in range(0, len(samples), step):
        yield AudioItem(samples[i:i + step], rate, t + i / rate)


#: 8-bit pixel formats whose first plane is the luma (Y) at full resolution
_LUMA_FIRST = frozenset({
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p",
    "yuvj440p", "yuv411p", "yuv410p", "yuva420p", "yuva422p", "yuva444p", "nv12", "nv21",
    "nv16", "nv24", "gray"})
#: limited-range ("TV", 16..235) luma to full range (0..255), as BT.601/709 define it
_LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
_RANGE_MPEG, _RANGE_JPEG = 1, 2  # AVColorRange


def gray_picture(frame: av.VideoFrame, max_width: int | None = None) -> npt.NDArray[np.uint8]:
    """The frame's luma as a full-range gray ``uint8`` picture (a new array), downscaled by
    area averaging to at most ``max_width``.

    The detectors look at brightness only (all but the optional object model, which gets
    :func:`bgr_picture`), so nothing converts colour: for the usual decoder
    outputs (8-bit YUV, the only thing VP8, H.264 and aiortc's decoders give) the Y plane is
    read in place and expanded from limited to full range, which is the luma a BGR-to-gray
    conversion computes (within rounding: FFmpeg's swscale path came out about one level
    darker, measured on VP8). Measured on a 640x480 VP8 frame: 0.1 ms against 0.8 ms for
    ``to_ndarray("bgr24")``, resizing and ``cvtColor``. Other formats (RGB, 10-bit, ...) go
    through swscale's gray conversion."""
    w, h = frame.width, frame.height
    name = frame.format.name
    arr: npt.NDArray[Any]
    if name in _LUMA_FIRST:
        plane = frame.planes[0]
        arr = np.frombuffer(memoryview(plane), np.uint8).reshape(h, plane.line_size)[:, :w]
        color_range = int(getattr(frame, "color_range", 0) or 0)
        limited = color_range == _RANGE_MPEG or (
            color_range != _RANGE_JPEG and not name.startswith("yuvj") and name != "gray")
    else:
        arr = frame.to_ndarray(format="gray")
        limited = False
    turns = _quarter_turns(frame)
    arr = _fit(arr, max_width, turns)
    if limited:
        arr = cv2.LUT(arr, _LIMITED_TO_FULL)
    elif not turns:
        return np.array(arr, dtype=np.uint8, order="C")  # a copy: the decoder reuses its buffers
    return _upright(arr, turns)


def bgr_picture(frame: av.VideoFrame, max_width: int | None = None) -> npt.NDArray[np.uint8]:
    """The frame in colour (BGR ``uint8``, a new array), downscaled by area averaging to at
    most ``max_width``: for analyzers that need colour (``wants_colour``)."""
    turns = _quarter_turns(frame)
    arr = _fit(frame.to_ndarray(format="bgr24"), max_width, turns)
    if not turns:
        return np.array(arr, dtype=np.uint8, order="C")
    return _upright(arr, turns)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """How many quarter turns counter-clockwise show the frame upright (0..3): a phone's
    recording stores the sensor's landscape pictures with a display rotation (its display
    matrix) instead of turning them. A face lying on its side is not found, so the detectors
    get the picture as a player would show it. Mirroring and other angles are ignored."""
    angle = getattr(frame, "rotation", 0) or 0
    return round(float(angle) / 90) % 4


def _upright(arr: npt.NDArray[Any], turns: int) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(np.rot90(arr, turns), dtype=np.uint8)


def _fit(arr: npt.NDArray[Any], max_width: int | None, turns: int = 0) -> npt.NDArray[Any]:
    """Downscale, by OpenCV's area averaging (faster here than swscale's scaler), so that
    the picture once upright (``turns`` quarter turns) is at most ``max_width`` wide (even
    sides, not turned yet)."""
    h, w = arr.shape[:2]
    sideways = turns % 2 == 1
    across = h if sideways else w  # the side that becomes the upright picture's width
    if max_width is None or across <= max_width:
        return arr
    scale = max_width / across
    # the other side is kept at MIN_SIDE at least (a 1920x80 banner stays analysable)
    if sideways:
        size = (min(w, max(MIN_SIDE, round(w * scale / 2) * 2)), max_width)
    else:
        size = (max_width, min(h, max(MIN_SIDE, round(h * scale / 2) * 2)))
    return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)


def _mono(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    """The samples of a mono ``flt`` frame (a new array), held to -1..1 as a sound card
    would: float audio may hold anything (1e30, inf, NaN), and the detectors expect a
    signal a microphone could have given. NaN becomes silence."""
    x: npt.NDArray[np.float32] = np.clip(frame.to_ndarray().reshape(-1), -1.0, 1.0,
                                         dtype=np.float32)
    if np.isnan(np.add.reduce(x, dtype=np.float64)):  # rare: a sum is cheaper than isnan
        np.nan_to_num(x, copy=False, nan=0.0)
    return x
