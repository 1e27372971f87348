"""``video.obscured``: the camera is covered, black or shows a uniform picture.

Method: on the half-width gray picture, the mean luma (very dark), the standard deviation
and the mean absolute Laplacian (edge energy). A picture is *obscured* when it is very dark,
or when it is both low in variance and low in edges (a hand or a sticker over the lens, a
blank frame). An episode needs ``min_s`` seconds.

Confidence grows the further the picture is below the thresholds. Known failure modes: a
person in a completely dark room is reported as obscured (it is, for the clinician); a plain
wall filling the view with nobody in front is reported as uniform.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from signals.media.frames import Gray
from signals.media.params import ObscuredParams

__all__ = ["ObscuredCheck", "Picture", "measure_picture"]


@dataclass(frozen=True, slots=True)
class Picture:
    """Cheap global statistics of a gray picture."""

    luma: float
    contrast: float
    edges: float


def measure_picture(small: Gray) -> Picture:
    lap = cv2.Laplacian(small, cv2.CV_16S, ksize=1)
    mean, std = cv2.meanStdDev(small)
    return Picture(float(mean[0, 0]), float(std[0, 0]), float(np.mean(np.abs(lap))))


class ObscuredCheck:
    """Per-frame decision: is the picture dark or uniform, and how sure are we."""

    def __init__(self, params: ObscuredParams) -> None:
        self.p = params

    def judge(self, pic: Picture) -> tuple[bool, float, str]:
        p = self.p
        if pic.luma < p.dark_luma:
            return True, min(1.0, 0.6 + 0.4 * (1 - pic.luma / max(p.dark_luma, 1e-6))), "dark"
        if pic.contrast < p.uniform_std and pic.edges < p.uniform_edges:
            margin = 1 - max(pic.contrast / max(p.uniform_std, 1e-6),
                             pic.edges / max(p.uniform_edges, 1e-6))
            return True, min(1.0, 0.6 + 0.4 * margin), "uniform"
        return False, 0.0, ""
