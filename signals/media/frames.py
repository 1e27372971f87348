"""Frame preparation shared by the video detectors: validation and downscaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

from signals.errors import MediaError

__all__ = ["Gray", "Prepared", "check_frame", "prepare"]

Gray = npt.NDArray[np.uint8]


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
    if frame.shape[0] < 16 or frame.shape[1] < 16:
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
