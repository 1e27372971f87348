"""``video.synthetic_source``: no camera sensor noise — a virtual camera or screen content.

Method: a real image sensor adds noise to every pixel of every frame, visible even in flat
regions after encoding. We estimate the noise standard deviation with Immerkær's fast method
(the absolute response of a 3x3 Laplacian-difference kernel, scaled by sqrt(pi/2)/6) over the
*flat* pixels only (small Sobel gradient, not clipped to black or white). A picture whose
flat regions carry less than ``strong_noise_sigma`` of noise is synthetic. Between that and
``max_noise_sigma`` (the *weak band*) a codec smoothing a real camera at a low bitrate lands
too; there the camera's noise, new in every picture, usually still shows in what *changes*
between pictures, while a rendered picture, or a still photograph a virtual camera moves
about, carries the same pixels from one picture to the next. So a weak picture counts only
when the temporal noise (the robust sigma of its difference from the previous analysed
picture, over its flat pixels, after undoing the global shift found by phase correlation;
the median over ``temporal_pictures`` weak pictures in a row) is below
``max_temporal_sigma``. Sustained for ``min_s`` seconds of samples, that is an episode.
Pictures with too few flat pixels, and weak pictures without a recent predecessor or in a
frozen stretch (which ``video.frozen`` explains), are not judged.

Confidence: 0.85 per picture below ``strong_noise_sigma`` — clean content such as a shared
screen; 0.35–0.55 ("weak", with a note) in the weak band. An episode's confidence is the
mean over its pictures, and its ``strength`` is worded from that (strong from 0.6). Best
read together with other signals (``client.virtual_device``, ``client.display_capture``).

Known failure modes: a camera with heavy in-camera denoising, or a very low bitrate call
(the codec then skips unchanged blocks, so neither noise shows), can look noise-free; a
virtual camera that adds artificial grain, or replays a camera recording (its noise is
real), is not detected; fine rendered texture (grass, fur in an animation) passes for noise.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
import numpy.typing as npt

from signals.media.detection import Detection
from signals.media.frames import Gray
from signals.media.params import SyntheticParams

__all__ = ["STRONG_CONFIDENCE", "WEAK_NOTE", "NoiseCheck", "estimate_noise", "temporal_noise",
           "word_strength"]

#: an episode whose mean confidence reaches this is "strong" (its pictures mostly clean)
STRONG_CONFIDENCE = 0.6
WEAK_NOTE = ("little sensor noise: a virtual camera, or a real camera smoothed by a "
             "low-bitrate codec")

_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_SCALE = float(np.sqrt(np.pi / 2) / 6)
_TEMPORAL_MARGIN = 8
_MIN_TEMPORAL_PIXELS = 200
_MAD_TO_SIGMA = 1.4826 / float(np.sqrt(2))  # a difference of two pictures' noise


def _flat_pixels(g: npt.NDArray[np.float32], flat_gradient: float) -> npt.NDArray[np.bool_]:
    """Pixels with a small Sobel gradient (after a 5x5 blur), not clipped, off the border."""
    blur = cv2.GaussianBlur(g, (5, 5), 0)
    gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)
    flat: npt.NDArray[np.bool_] = (np.abs(gx) + np.abs(gy) < flat_gradient) & (g > 8) & (g < 247)
    flat[:2, :] = flat[-2:, :] = False
    flat[:, :2] = flat[:, -2:] = False
    return flat


def estimate_noise(gray: Gray, flat_gradient: float) -> tuple[float, float]:
    """(noise sigma over flat pixels, fraction of pixels that are flat)."""
    sigma, frac, _ = _spatial(gray.astype(np.float32), flat_gradient)
    return sigma, frac


def _spatial(g: npt.NDArray[np.float32],
             flat_gradient: float) -> tuple[float, float, npt.NDArray[np.bool_]]:
    resp = np.abs(cv2.filter2D(g, -1, _KERNEL, borderType=cv2.BORDER_REFLECT))
    flat = _flat_pixels(g, flat_gradient)
    frac = float(np.count_nonzero(flat)) / flat.size
    if not frac:
        return 0.0, 0.0, flat
    return _SCALE * float(np.mean(resp[flat])), frac, flat


def temporal_noise(prev: Gray, gray: Gray, flat_gradient: float) -> float | None:
    """Noise sigma in what changed between two pictures of a stream, over the later one's
    flat pixels, after undoing the global shift between them: a camera's noise is new in
    every picture; a rendered picture, or a still photograph moved about, carries the same
    pixels from one picture to the next. ``None`` when the pictures differ in size or too
    few pixels are flat."""
    b = gray.astype(np.float32)
    return _temporal(prev, b, _flat_pixels(b, flat_gradient))


def _temporal(prev: Gray, b: npt.NDArray[np.float32],
              flat: npt.NDArray[np.bool_]) -> float | None:
    if prev.shape != b.shape:
        return None
    a = prev.astype(np.float32)
    h, w = a.shape
    # the shift, by phase correlation on the pictures halved (a quarter of the cost)
    (dx, dy), _ = cv2.phaseCorrelate(cv2.resize(a, (w // 2, h // 2), interpolation=cv2.INTER_AREA),
                                     cv2.resize(b, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    dx, dy = 2 * dx, 2 * dy
    shift = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    moved = cv2.warpAffine(a, shift, (w, h),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    m = _TEMPORAL_MARGIN + int(np.ceil(max(abs(dx), abs(dy))))
    if 2 * m >= min(h, w):
        return None
    # every second row and column: the median needs no more
    inner = flat[m:h - m:2, m:w - m:2]
    if np.count_nonzero(inner) < _MIN_TEMPORAL_PIXELS:
        return None
    diff = (b[m:h - m:2, m:w - m:2] - moved[m:h - m:2, m:w - m:2])[inner]
    mad = float(np.median(np.abs(diff - np.median(diff))))
    return _MAD_TO_SIGMA * mad


class NoiseCheck:
    """Judges one picture at a time; :meth:`judge` is handed the stream's previous analysed
    picture for the temporal check (a weak-band picture needs it)."""

    def __init__(self, params: SyntheticParams) -> None:
        self.p = params
        self._need = max(1, params.temporal_pictures)
        self._recent: deque[float] = deque(maxlen=self._need)

    def forget(self) -> None:
        """The picture was obscured: the recent temporal figures no longer describe it."""
        self._recent.clear()

    def judge(self, gray: Gray, prev: Gray | None = None
              ) -> tuple[bool | None, float, dict[str, float | str]]:
        """(synthetic, confidence, evidence); ``None`` when the picture cannot be judged.

        ``prev`` is the stream's previous analysed picture (a fraction of a second before),
        or ``None``."""
        g = gray.astype(np.float32)
        sigma, frac, flat = _spatial(g, self.p.flat_gradient)
        evidence: dict[str, float | str] = {"noise_sigma": round(sigma, 3),
                                            "flat_fraction": round(frac, 3)}
        if frac < self.p.min_flat_frac:
            self._recent.clear()
            return None, 0.0, evidence
        if sigma < self.p.strong_noise_sigma:
            # clean enough that codec smoothing of a real camera is an unlikely explanation
            self._recent.clear()
            return True, 0.85, {**evidence, "strength": "strong"}
        if sigma >= self.p.max_noise_sigma:
            self._recent.clear()
            return False, 0.0, evidence
        if self.p.max_temporal_sigma > 0:
            # the weak band, where codecs smoothing a real camera land too: the camera's
            # noise, new in every picture, may still show in what changes between pictures.
            # The median of the last few weak pictures' figures, in a row.
            moving = _temporal(prev, g, flat) if prev is not None else None
            if moving is None:
                self._recent.clear()
            else:
                self._recent.append(moving)
            if len(self._recent) < self._need:
                return None, 0.0, evidence
            temporal = float(np.median(self._recent))
            evidence["temporal_sigma"] = round(temporal, 3)
            if temporal >= self.p.max_temporal_sigma:
                return False, 0.0, evidence
        span = max(self.p.max_noise_sigma - self.p.strong_noise_sigma, 1e-6)
        conf = 0.35 + 0.2 * (self.p.max_noise_sigma - sigma) / span
        return True, conf, {**evidence, "strength": "weak", "note": WEAK_NOTE}


def word_strength(detection: Detection) -> None:
    """Word an episode's ``strength`` (and the note of a weak one) by its confidence, the
    mean over its pictures, rather than by its last picture's: an episode of clean pictures
    that ends on a few weak ones is strong, and says so (the ``word`` of its
    :class:`~signals.media.episodes.Episode`)."""
    strong = detection.confidence >= STRONG_CONFIDENCE
    detection.evidence["strength"] = "strong" if strong else "weak"
    if strong:
        detection.evidence.pop("note", None)
    else:
        detection.evidence["note"] = WEAK_NOTE
