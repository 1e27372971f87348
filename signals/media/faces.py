"""``video.extra_person`` and ``video.no_person``: faces counted over time.

Method: OpenCV's shipped Haar cascades (frontal face; the profile cascade, mirrored too,
every ``profile_every``-th run and whenever the frontal one finds fewer faces than before,
its extra faces held in between) run about once a second (``interval_s``) on the gray
picture (histogram-equalised in poor light) downscaled to ``work_width`` (240);
overlapping boxes are merged. The count is held between runs, and episodes need the condition for
``extra_min_s`` (two or more faces) or ``none_min_s`` (no face),
bridging one missed run (``gap_s``), so a single miss or a single false box never fires.

Confidence: ``extra_person`` 0.8, ``no_person`` 0.7; both are
multiplied by a lighting factor: Haar detectors miss faces far more often in poor light, at
low contrast and — documented for face detectors generally — on darker skin. The evidence
then says ``lighting: poor`` and carries a note. ``no_person`` is worded as an observation
about the picture ("no face detected"), never as something the patient did.

Known failure modes: faces turned more than about 45°, small faces (under
``min_face_frac`` of the width), masks and heavy shadows are missed; posters, photos and
screens showing faces are counted as people.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import cv2
import numpy as np

from signals.media.frames import Gray
from signals.media.params import FaceParams

__all__ = ["POOR_LIGHT_NOTE", "FaceDetector", "lighting_factor"]

POOR_LIGHT_NOTE = ("poor light or low contrast: face detection misses faces more often here, "
                   "and more often on darker skin; treat this as uncertain")

Box = tuple[int, int, int, int]


@functools.cache
def _cascade(name: str) -> cv2.CascadeClassifier:
    path = str(cv2.data.haarcascades) + name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():  # pragma: no cover - broken OpenCV install
        raise RuntimeError(f"OpenCV cascade {name} could not be loaded")
    return cascade


def _iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    small = min(aw * ah, bw * bh)
    return inter / small if small else 0.0


def _merge(boxes: list[Box]) -> list[Box]:
    kept: list[Box] = []
    for box in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if all(_iou(box, k) < 0.3 for k in kept):
            kept.append(box)
    return kept


def lighting_factor(luma: float, contrast: float, params: FaceParams) -> tuple[float, bool]:
    """(factor 0.4..1 applied to face confidences, poor light?)."""
    light = min(1.0, luma / max(params.poor_light_luma, 1e-6))
    con = min(1.0, contrast / max(params.poor_contrast, 1e-6))
    factor = max(0.4, min(light, con))
    return factor, factor < 1.0


class FaceDetector:
    """Counts faces in a gray picture (Haar cascades, frontal + profile)."""

    def __init__(self, params: FaceParams) -> None:
        self.p = params
        self._frontal = _cascade("haarcascade_frontalface_default.xml")
        self._profile = _cascade("haarcascade_profileface.xml")
        self._runs = 0
        self._last = 0
        self._profile_only = 0

    def count(self, gray: Gray, poor_light: bool = False) -> int:
        """Faces in ``gray`` (profile-only faces held between profile runs)."""
        p = self.p
        # equalising helps in poor light but adds false boxes in good light
        if gray.shape[1] > p.work_width:
            h = max(16, round(gray.shape[0] * p.work_width / gray.shape[1]))
            gray = cast(Gray, cv2.resize(gray, (p.work_width, h), interpolation=cv2.INTER_AREA))
        eq = cv2.equalizeHist(gray) if poor_light else gray
        size = max(16, int(gray.shape[1] * p.min_face_frac))
        kw: dict[str, Any] = {"scaleFactor": p.scale_factor, "minNeighbors": p.min_neighbors,
                              "minSize": (size, size)}
        boxes: list[Box] = [tuple(int(v) for v in b)  # type: ignore[misc]
                            for b in self._frontal.detectMultiScale(eq, **kw)]
        self._runs += 1
        frontal = len(boxes)
        # the profile cascade costs about 1.5x the frontal one: it runs every
        # ``profile_every``-th run, and whenever the frontal one finds fewer faces than were
        # last counted (a person turning away). In an empty picture (nothing counted last
        # time either) only the periodic runs look for someone arriving in profile.
        profile = p.profile_every > 0 and (
            self._runs % p.profile_every == 0 or frontal < self._last)
        if not profile:
            # faces only the profile cascade saw are held until its next run
            self._last = frontal + self._profile_only
            return self._last
        width = gray.shape[1]
        kw["minNeighbors"] = p.profile_min_neighbors
        for b in self._profile.detectMultiScale(eq, **kw):
            boxes.append(tuple(int(v) for v in b))  # type: ignore[arg-type]
        for x, y, w, h in self._profile.detectMultiScale(np.ascontiguousarray(eq[:, ::-1]), **kw):
            boxes.append((int(width - x - w), int(y), int(w), int(h)))
        merged = _merge(boxes)
        self._profile_only = max(0, len(merged) - frontal)
        self._last = len(merged)
        return self._last
