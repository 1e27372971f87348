"""Frame preparation shared by the video detectors: validation, black bars, downscaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from signals.errors import MediaError
from signals.media.params import BarParams

__all__ = ["MIN_SIDE", "BarTrim", "Gray", "Prepared", "check_frame", "find_bars", "prepare"]

Gray = npt.NDArray[np.uint8]

#: the smallest picture side (pixels) the video detectors can work with
MIN_SIDE = 16


@dataclass(frozen=True, slots=True)
class Prepared:
    """One analysed frame: ``gray`` at the working width, ``small`` at half of it."""

    gray: Gray
    small: Gray


def check_frame(frame: object) -> npt.NDArray[np.uint8]:
    """Raise :class:`MediaError` unless ``frame`` is a uint8 HxWx3 (BGR) or HxW array."""
    if not isinstance(frame, np.ndarray):
        raise MediaError("a video frame must be a numpy array")
    if frame.dtype != np.uint8:
        raise MediaError(f"a video frame must be uint8, not {frame.dtype}")
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] != 3):
        raise MediaError(f"a video frame must be HxWx3 (BGR), not shape {frame.shape}")
    if frame.shape[0] < MIN_SIDE or frame.shape[1] < MIN_SIDE:
        raise MediaError(f"a video frame of {frame.shape[1]}x{frame.shape[0]} is too small")
    return frame


def prepare(frame: npt.NDArray[np.uint8], work_width: int) -> Prepared:
    """Gray picture at ``work_width`` (never upscaled) and at half of that."""
    h, w = frame.shape[:2]
    if w > work_width:
        nh = max(16, round(h * work_width / w))
        frame = cast(Gray, cv2.resize(frame, (work_width, nh), interpolation=cv2.INTER_AREA))
    gray = frame if frame.ndim == 2 else cast(Gray, cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    gh, gw = gray.shape
    half = (max(8, gw // 2), max(8, gh // 2))
    small = cast(Gray, cv2.resize(gray, half, interpolation=cv2.INTER_AREA))
    return Prepared(np.ascontiguousarray(gray), small)


Bars = tuple[int, int, int, int]  # rows at the top, rows at the bottom, columns left, right
_NO_BARS: Bars = (0, 0, 0, 0)
_BAR_SLACK = 2  # pixels a bar's edge may wander (codec ringing) and still be the same bar
_MIN_CONTENT_PX = 16


def _run(dark: npt.NDArray[np.bool_]) -> int:
    """How many leading entries are true."""
    return len(dark) if bool(dark.all()) else int(np.argmin(dark))


def find_bars(picture: npt.NDArray[np.uint8], max_luma: int, min_content: float) -> Bars:
    """Black bars at the picture's edges: whole rows or columns no brighter than
    ``max_luma`` (FFmpeg's ``cropdetect`` uses the same test, with 24). None in a direction
    where trimming them would leave less than ``min_content`` of the picture (a covered
    camera or a black frame is all "bar": that is for ``video.obscured`` to judge)."""
    gray = picture if picture.ndim == 2 else picture[..., 1]  # green: luma enough for black
    h, w = gray.shape
    rows = gray.max(axis=1) <= max_luma
    cols = gray.max(axis=0) <= max_luma
    top, bottom = _run(rows), _run(rows[::-1])
    left, right = _run(cols), _run(cols[::-1])
    if h - top - bottom < max(min_content * h, _MIN_CONTENT_PX):
        top = bottom = 0
    if w - left - right < max(min_content * w, _MIN_CONTENT_PX):
        left = right = 0
    return top, bottom, left, right


def _near(a: Bars, b: Bars | None) -> bool:
    return b is not None and all(abs(x - y) <= _BAR_SLACK for x, y in zip(a, b, strict=True))


class BarTrim:
    """Trims letterbox or pillarbox bars (a 4:3 camera in a 16:9 recording, a phone's
    upright picture in a landscape one) off each picture, so that they do not darken the
    picture for ``video.obscured``, pass for noise-free flat content for
    ``video.synthetic_source``, or shrink the picture the face search sees. The trim is
    held: a new one (bars appearing, going or moving by more than two pixels) is used once
    ``hold_frames`` pictures in a row show it, so the picture's size does not flicker and a
    moment of darkness at the top of a room is not taken for a bar. A change of picture size
    starts again without bars."""

    def __init__(self, params: BarParams) -> None:
        self.p = params
        self.bars = _NO_BARS
        self._shape: tuple[int, ...] = ()
        self._candidate: Bars | None = None
        self._seen = 0

    def __call__(self, frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """``frame`` without its bars (a view)."""
        if not self.p.enabled:
            return frame
        if frame.shape[:2] != self._shape:
            self._shape, self.bars, self._candidate, self._seen = frame.shape[:2], _NO_BARS, None, 0
        found = find_bars(frame, self.p.max_luma, self.p.min_content)
        if _near(found, self.bars):
            self._candidate, self._seen = None, 0
        elif _near(found, self._candidate):
            self._seen += 1
        else:
            self._candidate, self._seen = found, 1
        if self._candidate is not None and self._seen >= self.p.hold_frames:
            self.bars, self._candidate, self._seen = self._candidate, None, 0
        top, bottom, left, right = self.bars
        h, w = frame.shape[:2]
        return frame[top:h - bottom, left:w - right]
