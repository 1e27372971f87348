"""The video half of the evaluation set, generated from photographs scikit-image ships.

Every clip is a list of BGR frames (320x240, 10 fps by default) with exact labels: the
intervals (seconds) in which each video signal is true. People: ``skimage.data.astronaut``
(frontal face) and ``skimage.data.camera`` (a man with a camera, face in profile); empty
scenes: ``coffee`` and ``rocket``. Camera-like motion (slow seeded drift and zoom) and
sensor noise are added per frame; ``vp8_round_trip`` passes a clip through libvpx (PyAV) in
memory, as a WebRTC call would.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import cv2
import numpy as np
import numpy.typing as npt
import skimage.data

from monitor.mediafile import gray_picture

__all__ = [
    "FPS",
    "VP8_OPTIONS",
    "Clip",
    "all_clips",
    "frames_to_bytes",
    "photo_clip",
    "vp8_round_trip",
    "write_media_file",
]

FPS = 10
# Fast and deterministic: libvpx's "realtime" deadline adapts to the machine's load, so its
# output (and the tests' results) would vary from run to run.
VP8_OPTIONS = {"deadline": "good", "cpu-used": "16", "lag-in-frames": "0", "threads": "1"}
W, H = 320, 240
Frame = npt.NDArray[np.uint8]


@dataclass
class Clip:
    name: str
    frames: list[Frame]
    labels: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    fps: int = FPS

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps


def _photo(name: str) -> Frame:
    return cast(Frame, getattr(skimage.data, name)())


def _bgr(img: npt.NDArray[np.uint8]) -> Frame:
    if img.ndim == 2:
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def astronaut_head() -> Frame:
    return _bgr(_photo("astronaut"))[0:288, 40:424]


def cameraman_head() -> Frame:
    return _bgr(_photo("camera"))[0:288, 40:424]


def two_people() -> Frame:
    left = cv2.resize(_bgr(_photo("astronaut"))[0:384, 80:336], (160, 240))
    right = cv2.resize(_bgr(_photo("camera"))[0:384, 90:346], (160, 240))
    return np.ascontiguousarray(np.hstack([left, right]))


def empty_room() -> Frame:
    return _bgr(_photo("coffee"))


def rocket() -> Frame:
    return _bgr(_photo("rocket"))


def screen_slide(k: int) -> Frame:
    """A slide of flat colours and text, as a shared screen shows it (no sensor noise)."""
    img = np.full((H, W, 3), (245, 240, 235), np.uint8)
    cv2.rectangle(img, (0, 0), (W, 36), (120, 60, 20), -1)
    cv2.putText(img, f"Exercise plan {k}", (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                (255, 255, 255), 2)
    for i in range(6):
        cv2.putText(img, f"- step {i + 1}: repeat {3 + i} times", (16, 70 + 26 * i),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.5, (40, 40, 40), 1)
    cv2.rectangle(img, (230, 60), (300, 200), (90, 170, 90), -1)
    return img


def _camera(src: Frame, n: int, rng: np.random.Generator, noise: float, move: float = 1.0,
            start: int = 0) -> list[Frame]:
    """``n`` frames of a slowly drifting, zooming view of ``src`` with sensor noise."""
    out: list[Frame] = []
    sh, sw = src.shape[:2]
    # a seeded random walk (not periodic: a periodic drift would be a genuine visual loop)
    steps: npt.NDArray[Any] = np.cumsum(rng.normal(0, 1, (start + n, 3)), axis=0)
    walk = np.asarray(cv2.GaussianBlur(steps.astype(np.float32), (1, 9), 3)).reshape(-1, 3)
    for i in range(start, start + n):
        s = 1.0 + 0.04 * move * (1 + np.tanh(walk[i, 0] / 6))
        dx = 10 * move * np.tanh(walk[i, 1] / 6)
        dy = 6 * move * np.tanh(walk[i, 2] / 6)
        m = np.array([[s * W / sw, 0, dx - (s - 1) * W / 2],
                      [0, s * H / sh, dy - (s - 1) * H / 2]], np.float32)
        img = cv2.warpAffine(src, m, (W, H), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        out.append(_noisy(cast(Frame, img), rng, noise))
    return out


def _noisy(img: Frame, rng: np.random.Generator, sigma: float) -> Frame:
    if sigma <= 0:
        return img.copy()
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    noise *= sigma
    noise += img
    return np.clip(noise, 0, 255, out=noise).astype(np.uint8)


def _flat(level: tuple[int, int, int], n: int, rng: np.random.Generator,
          sigma: float) -> list[Frame]:
    base = np.empty((H, W, 3), np.uint8)
    base[:] = level
    return [_noisy(base, rng, sigma) for _ in range(n)]


def _secs(s: float) -> int:
    return round(s * FPS)


def photo_clip(name: str, photo: Frame, seed: int, dur: float = 10.0,
               labels: dict[str, list[tuple[float, float]]] | None = None) -> Clip:
    """Any photograph (BGR, ideally 4:3) through the same seeded camera as the corpus's own:
    drift, zoom and sensor noise, 320x240 at 10 fps."""
    rng = np.random.default_rng(seed)
    return Clip(name, _camera(photo, _secs(dur), rng, 3.0, move=0.7), dict(labels or {}))


def clip_person(seed: int, who: str = "astronaut", dur: float = 8.0, noise: float = 3.0) -> Clip:
    rng = np.random.default_rng(seed)
    src = astronaut_head() if who == "astronaut" else cameraman_head()
    return Clip(f"person-{who}-{seed}", _camera(src, _secs(dur), rng, noise))


def clip_still_person(seed: int, dur: float = 8.0) -> Clip:
    """A person sitting very still: the picture barely moves, sensor noise remains."""
    rng = np.random.default_rng(seed)
    return Clip(f"still-person-{seed}", _camera(astronaut_head(), _secs(dur), rng, 3.0, move=0.05))


def clip_two_people(seed: int, dur: float = 8.0) -> Clip:
    rng = np.random.default_rng(seed)
    return Clip(f"two-people-{seed}", _camera(two_people(), _secs(dur), rng, 3.0, move=0.5),
                {"video.extra_person": [(0.0, dur)]})


def clip_empty(seed: int, dur: float = 8.0) -> Clip:
    rng = np.random.default_rng(seed)
    src = empty_room() if seed % 2 else rocket()
    return Clip(f"empty-{seed}", _camera(src, _secs(dur), rng, 3.0),
                {"video.no_person": [(0.0, dur)]})


def clip_covered(seed: int, kind: str = "dark") -> Clip:
    rng = np.random.default_rng(seed)
    frames = _camera(astronaut_head(), _secs(2), rng, 3.0)
    level = (6, 6, 8) if kind == "dark" else (120, 140, 170)
    frames += _flat(level, _secs(5), rng, 1.5 if kind == "dark" else 2.0)
    frames += _camera(astronaut_head(), _secs(2), rng, 3.0, start=_secs(7))
    return Clip(f"covered-{kind}-{seed}", frames, {"video.obscured": [(2.0, 7.0)]})


def clip_frozen(seed: int) -> Clip:
    rng = np.random.default_rng(seed)
    frames = _camera(astronaut_head(), _secs(2), rng, 3.0)
    frames += [frames[-1].copy() for _ in range(_secs(5))]
    frames += _camera(astronaut_head(), _secs(2), rng, 3.0, start=_secs(7))
    return Clip(f"frozen-{seed}", frames, {"video.frozen": [(1.9, 7.0)]})


def clip_loop(seed: int) -> Clip:
    """Five seconds of lively video, then the first four replayed (a looped recording)."""
    rng = np.random.default_rng(seed)
    live = _camera(astronaut_head(), _secs(5), rng, 3.0, move=3.0)
    frames = live + [f.copy() for f in live[: _secs(4)]]
    return Clip(f"loop-{seed}", frames, {"video.loop": [(5.0, 9.0)]})


def clip_screen(seed: int, dur: float = 8.0) -> Clip:
    """Screen content (a scrolling slide) through a virtual camera: no sensor noise, no face."""
    rng = np.random.default_rng(seed)
    slide = np.vstack([screen_slide(seed), screen_slide(seed + 1)])
    frames: list[Frame] = []
    offset = float(rng.uniform(0, 20))
    for i in range(_secs(dur)):
        y = int(offset + i * 2) % H
        frames.append(np.ascontiguousarray(slide[y:y + H]))
    return Clip(f"screen-{seed}", frames,
                {"video.synthetic_source": [(0.0, dur)], "video.no_person": [(0.0, dur)]})


def clip_virtual_camera(seed: int, dur: float = 8.0) -> Clip:
    """A person rendered by a virtual camera: moving picture, no sensor noise."""
    rng = np.random.default_rng(seed)
    src = cv2.GaussianBlur(astronaut_head(), (3, 3), 0)
    return Clip(f"virtual-{seed}", _camera(cast(Frame, src), _secs(dur), rng, 0.0),
                {"video.synthetic_source": [(0.0, dur)]})


def clip_dim_person(seed: int, dur: float = 8.0) -> Clip:
    """A person in poor light (not part of the precision/recall set)."""
    rng = np.random.default_rng(seed)
    src = (astronaut_head().astype(np.float32) * 0.22).astype(np.uint8)
    return Clip(f"dim-{seed}", _camera(src, _secs(dur), rng, 2.0))


def clip_dim_empty(seed: int, dur: float = 8.0) -> Clip:
    """A dim room with nobody in view (poor light: low-confidence no_person)."""
    rng = np.random.default_rng(seed)
    src = (empty_room().astype(np.float32) * 0.35).astype(np.uint8)
    return Clip(f"dim-empty-{seed}", _camera(src, _secs(dur), rng, 2.0),
                {"video.no_person": [(0.0, dur)]})


BUILDERS: list[Callable[[int], Clip]] = [
    clip_person,
    lambda s: clip_person(s, "cameraman"),
    clip_still_person,
    clip_two_people,
    clip_empty,
    clip_covered,
    lambda s: clip_covered(s, "uniform"),
    clip_frozen,
    clip_loop,
    clip_screen,
    clip_virtual_camera,
    clip_dim_person,
    clip_dim_empty,
]


def all_clips(seeds: range = range(3)) -> Iterator[Clip]:
    """Every clip kind for every seed (the evaluation set), built one at a time."""
    for seed in seeds:
        for build in BUILDERS:
            yield build(seed)


def frames_to_bytes(frames: list[Frame], fps: int = FPS, codec: str = "libvpx",
                    fmt: str = "webm", bitrate: int | None = 400_000,
                    options: dict[str, str] | None = None) -> bytes:
    """Encode ``frames`` in memory (VP8/WebM by default). ``bitrate`` ``None`` leaves the
    codec its own rate control (x264's CRF); ``options`` default to :data:`VP8_OPTIONS` for
    libvpx."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream: Any = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        if bitrate is not None:
            stream.bit_rate = bitrate
        if options is not None:
            stream.options = options
        elif codec == "libvpx":
            stream.options = VP8_OPTIONS
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return buf.getvalue()


def vp8_round_trip(clip: Clip, bitrate: int = 400_000) -> Clip:
    """The clip after a VP8 encode and decode, in memory, as the sidecar's decoders hand it
    to the detectors (gray luma, :func:`monitor.mediafile.gray_picture`)."""
    data = frames_to_bytes(clip.frames, clip.fps, bitrate=bitrate)
    frames: list[Frame] = []
    with av.open(io.BytesIO(data), "r") as inp:
        for frame in inp.decode(video=0):
            frames.append(gray_picture(frame))
    return Clip(clip.name + "-vp8", frames[: len(clip.frames)], clip.labels, clip.fps)


def write_media_file(path: Path, frames: list[Frame], fmt: str, vcodec: str, acodec: str,
                     fps: int = FPS, seed: int = 0, rate: int = 48_000) -> None:
    """Mux ``frames`` and a quiet tone over room noise into ``path`` (e.g. VP8 + Opus WebM)."""
    rng = np.random.default_rng(seed)
    duration = len(frames) / fps
    with av.open(str(path), "w", format=fmt) as out:
        vs: Any = out.add_stream(vcodec, rate=fps)
        vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
        vs.pix_fmt = "yuv420p"
        vs.bit_rate = 400_000 if vs.width <= 320 else 1_200_000
        if vcodec == "libvpx":
            vs.options = VP8_OPTIONS
        elif vcodec == "libx264":
            # x264's macroblock-tree rate control gave different bytes from one encode of the
            # same pictures to the next (measured here, even with one thread): without it the
            # file is the same every time, so what a test asserts about it does not depend on
            # the tests that ran before
            vs.options = {"x264-params": "mbtree=0"}
        a_s: Any = out.add_stream(acodec, rate=rate)
        a_s.layout = "mono"
        for f in frames:
            for pkt in vs.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                out.mux(pkt)
        n = int(duration * rate)
        tt = np.arange(n) / rate
        audio = (0.05 * np.sin(2 * np.pi * 220 * tt) + rng.normal(0, 0.003, n)).astype(np.float32)
        chunk, pts = 960, 0
        for i in range(0, n - chunk + 1, chunk):
            af = av.AudioFrame.from_ndarray(audio[None, i:i + chunk], format="flt", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, pts, Fraction(1, rate)
            pts += chunk
            for pkt in a_s.encode(af):
                out.mux(pkt)
        for stream in (vs, a_s):
            for pkt in stream.encode():
                out.mux(pkt)


def set_display_rotation(mp4: bytes, degrees: int) -> bytes:
    """``mp4`` with its first track's display matrix (ISO/IEC 14496-12 ``tkhd``) set to turn
    the stored pictures ``degrees`` clockwise for display (90, 180 or 270), as a phone held
    upright stores its sensor's landscape pictures. FFmpeg reads it back as the frames'
    display matrix (PyAV: ``VideoFrame.rotation``, counter-clockwise, so 90 reads as -90)."""
    one = 0x10000
    a, b, c, d = {90: (0, one, -one, 0), 180: (-one, 0, 0, -one),
                  270: (0, -one, one, 0)}[degrees]
    at = mp4.find(b"tkhd")
    if at < 0:
        raise ValueError("no track header (tkhd) in the file")
    version = mp4[at + 4]
    # after the type: version+flags, times, track id, reserved, duration (wider in version
    # 1), reserved (8), layer, alternate group, volume, reserved (2 bytes each)
    start = at + 4 + 4 + (8 + 8 + 4 + 4 + 8 if version == 1 else 4 + 4 + 4 + 4 + 4) + 8 + 8
    matrix = struct.pack(">9i", a, b, 0, c, d, 0, 0, 0, 0x40000000)
    return mp4[:start] + matrix + mp4[start + 36:]
