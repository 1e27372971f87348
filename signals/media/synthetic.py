"""``video.synthetic_source``: no camera sensor noise — a virtual camera or screen content.

Method: a real image sensor adds noise to every pixel of every frame, visible even in flat
regions after encoding. We estimate the noise standard deviation with Immerkær's fast method
(the absolute response of a 3x3 Laplacian-difference kernel, scaled by sqrt(pi/2)/6) over the
*flat* pixels only (small Sobel gradient, not clipped to black or white). A picture whose
flat regions carry less than ``max_noise_sigma`` of noise, sustained for ``min_s`` seconds
of samples, is synthetic. Pictures with too few flat pixels are not judged.

Confidence: 0.85 per picture below ``strong_noise_sigma`` — clean content such as a shared
screen; 0.35–0.55 ("weak", with a note) between that and ``max_noise_sigma``, where codecs
smoothing a real camera at low bitrates land too. An episode's confidence is the mean over
its pictures, and its ``strength`` is worded from that (strong from 0.6). Best read
together with other signals (``client.virtual_device``, ``client.display_capture``).

Known failure modes: a camera with heavy in-camera denoising, or a very low bitrate call,
can look noise-free; a virtual camera that adds artificial grain is not detected.
"""

from __future__ import annotations

import cv2
import numpy as np

from signals.media.detection import Detection
from signals.media.frames import Gray
from signals.media.params import SyntheticParams

__all__ = ["STRONG_CONFIDENCE", "WEAK_NOTE", "NoiseCheck", "estimate_noise", "word_strength"]

#: an episode whose mean confidence reaches this is "strong" (its pictures mostly clean)
STRONG_CONFIDENCE = 0.6
WEAK_NOTE = ("little sensor noise: a virtual camera, or a real camera smoothed by a "
             "low-bitrate codec")

_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
_SCALE = float(np.sqrt(np.pi / 2) / 6)


def estimate_noise(gray: Gray, flat_gradient: float) -> tuple[float, float]:
    """(noise sigma over flat pixels, fraction of pixels that are flat)."""
    g = gray.astype(np.float32)
    resp = np.abs(cv2.filter2D(g, -1, _KERNEL, borderType=cv2.BORDER_REFLECT))
    blur = cv2.GaussianBlur(g, (5, 5), 0)
    gx = cv2.Sobel(blur, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(blur, cv2.CV_32F, 0, 1, ksize=3)
    flat = (np.abs(gx) + np.abs(gy) < flat_gradient) & (g > 8) & (g < 247)
    flat[:2, :] = flat[-2:, :] = False
    flat[:, :2] = flat[:, -2:] = False
    frac = float(np.count_nonzero(flat)) / flat.size
    if not frac:
        return 0.0, 0.0
    return _SCALE * float(np.mean(resp[flat])), frac


class NoiseCheck:
    def __init__(self, params: SyntheticParams) -> None:
        self.p = params

    def judge(self, gray: Gray) -> tuple[bool | None, float, dict[str, float | str]]:
        """(synthetic, confidence, evidence); ``None`` when the picture cannot be judged."""
        sigma, frac = estimate_noise(gray, self.p.flat_gradient)
        evidence: dict[str, float | str] = {"noise_sigma": round(sigma, 3),
                                            "flat_fraction": round(frac, 3)}
        if frac < self.p.min_flat_frac:
            return None, 0.0, evidence
        if sigma < self.p.strong_noise_sigma:
            # clean enough that codec smoothing of a real camera is an unlikely explanation
            return True, 0.85, {**evidence, "strength": "strong"}
        if sigma < self.p.max_noise_sigma:
            span = max(self.p.max_noise_sigma - self.p.strong_noise_sigma, 1e-6)
            conf = 0.35 + 0.2 * (self.p.max_noise_sigma - sigma) / span
            return True, conf, {**evidence, "strength": "weak", "note": WEAK_NOTE}
        return False, 0.0, evidence


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
