"""Optional object-detector hook: ``video.phone`` — a phone held toward the camera.

No model ships with sessionguard. Point ``video.objects.model`` in ``config/media.yaml`` at
an ONNX file of a COCO-class detector (YOLOv5 ``[1, N, 85]`` or YOLOv8 ``[1, 84, N]``
output, boxes as centre x, centre y, width, height in input pixels); it runs through
OpenCV's DNN module about once a second. A detection of ``class_id`` (67, "cell phone") with
a score of at least ``min_score`` covering at least ``min_area_frac`` of the picture —
i.e. held close to the lens — counts; the episode needs ``min_s``.

Confidence: the mean detector score. Known failure modes: whatever the model's own are
(other dark rectangles, a phone used innocently for a two-factor code).
Loading the model is the one file read of this package and happens once, at construction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt

from signals.errors import ConfigError
from signals.media.params import ObjectParams

__all__ = ["ObjectDetector", "parse_detections"]


def parse_detections(
    out: npt.NDArray[Any], input_size: int, class_id: int
) -> list[tuple[float, float]]:
    """(score, box area as a fraction of the input) of every candidate of ``class_id``."""
    arr = np.asarray(out, dtype=np.float32)
    arr = arr.reshape(arr.shape[-2], arr.shape[-1]) if arr.ndim >= 2 else arr.reshape(1, -1)
    if arr.shape[0] in (84, 85) and arr.shape[1] not in (84, 85):
        arr = arr.T
    cols = arr.shape[1]
    if cols == 85:
        scores = arr[:, 4] * arr[:, 5 + class_id]
    elif cols == 84:
        scores = arr[:, 4 + class_id]
    else:
        raise ConfigError(f"object model output has {cols} columns; expected 84 or 85 (COCO)")
    area = np.abs(arr[:, 2] * arr[:, 3]) / float(input_size * input_size)
    return [(float(s), float(a)) for s, a in zip(scores, area, strict=True)]


class ObjectDetector:
    """Runs an ONNX COCO detector and reports the best phone candidate."""

    def __init__(self, params: ObjectParams) -> None:
        if not params.model:
            raise ConfigError("no object model configured (video.objects.model)")
        path = Path(params.model)
        if not path.is_file():
            raise ConfigError(f"object model {path} does not exist")
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ConfigError(f"object model {path} could not be loaded by OpenCV: "
                              f"{str(exc).strip().splitlines()[-1]}") from None
        self.p = params

    def phone(self, frame_bgr: npt.NDArray[np.uint8]) -> tuple[bool, float, float]:
        """(phone held toward the camera, score, area fraction)."""
        s = self.p.input_size
        image = frame_bgr
        if image.ndim == 2:  # a gray picture: the model still gets three channels
            image = cast(npt.NDArray[np.uint8], cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (s, s), swapRB=True, crop=False)
        self._net.setInput(blob)
        out = self._net.forward()
        best = (0.0, 0.0)
        for score, area in parse_detections(out, s, self.p.class_id):
            if score >= self.p.min_score and area >= self.p.min_area_frac and score > best[0]:
                best = (score, area)
        return best[0] > 0, best[0], best[1]
