"""``video.frozen``: the same frame for at least ``min_s`` seconds.

Method: consecutive analysed frames (half-width gray) are compared; a frame *repeats* when
the mean absolute difference is under ``max_mean_diff`` gray levels and fewer than
``max_changed_frac`` of the pixels changed by more than ``changed_level``. A real camera
filming a still scene still has sensor noise, so its frames differ everywhere by a little;
a frozen decoded stream (a stalled or paused source) repeats the frame exactly or nearly.

Confidence: 0.95 for exact repeats, lower the closer the difference is to the threshold.
Known failure modes: a very low bitrate can make the encoder skip a perfectly still scene,
which then looks frozen; a static screen share (a slide) is, by this definition, frozen.
"""

from __future__ import annotations

import cv2
import numpy as np

from signals.media.frames import Gray
from signals.media.params import FrozenParams

__all__ = ["FrozenCheck"]


class FrozenCheck:
    def __init__(self, params: FrozenParams) -> None:
        self.p = params

    def judge(self, prev: Gray, cur: Gray) -> tuple[bool, float, float]:
        """(repeats, confidence, mean difference) of ``cur`` against ``prev``."""
        if prev.shape != cur.shape:
            return False, 0.0, 255.0
        diff = cv2.absdiff(prev, cur)
        mean = float(np.mean(diff))
        changed = float(np.count_nonzero(diff > self.p.changed_level)) / diff.size
        if mean <= self.p.max_mean_diff and changed <= self.p.max_changed_frac:
            conf = 0.95 - 0.35 * (mean / max(self.p.max_mean_diff, 1e-6))
            return True, conf, mean
        return False, 0.0, mean
