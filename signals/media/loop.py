"""``video.loop``: earlier video replayed, for at least ``min_s`` seconds.

Method: each analysed frame gets a 64-bit DCT perceptual hash (pHash: 32x32 gray, DCT, the
8x8 lowest frequencies without DC, above/below their median). An index keeps the hashes of
the last ``window_s`` seconds. A frame *matches* an earlier one when their Hamming distance
is at most ``max_hamming`` and it is at least ``min_offset_s`` older. Matches are grouped by
their time offset; a run of matches at a consistent offset (within
``offset_tolerance_s``) lasting ``min_s`` is a replay, provided the segment itself moved:
its hashes must drift by at least ``min_drift_bits`` from its first one. A static scene
matches itself at every offset and never drifts, so it is ignored.

Confidence: 0.6 at the minimum length and drift, rising with both and with the closeness
of the matches. Known failure modes: strictly periodic motion (a swinging pendulum, a
rotating logo) looks like a replay; a replay re-encoded at a much lower resolution may hash
too differently to match.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from signals.media.frames import Gray
from signals.media.params import LoopParams

__all__ = ["LoopIndex", "hamming", "phash"]

_WEIGHTS = 1 << np.arange(64, dtype=np.uint64)


def phash(gray: Gray) -> int:
    """64-bit DCT perceptual hash of a gray picture."""
    tiny = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(tiny)[:8, :8].flatten()[1:]
    bits = np.concatenate(([False], low > np.median(low)))
    return int(np.sum(_WEIGHTS[bits]))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


@dataclass
class _Run:
    offset: float
    start: float
    last: float
    first_hash: int
    drift: int
    dist_sum: int
    n: int


class LoopIndex:
    """Hash index of recent frames and the runs of matches at a consistent offset."""

    def __init__(self, params: LoopParams) -> None:
        self.p = params
        self._index: deque[tuple[float, int]] = deque()
        self._runs: list[_Run] = []

    def push(self, t: float, h: int) -> tuple[bool, float, dict[str, float]]:
        """Add frame hash ``h`` at ``t``; (replaying, confidence, evidence)."""
        p = self.p
        while self._index and self._index[0][0] < t - p.window_s:
            self._index.popleft()
        matches: dict[float, int] = {}
        for te, he in self._index:
            if t - te < p.min_offset_s:
                break
            d = hamming(h, he)
            if d <= p.max_hamming:
                off = t - te
                matches[off] = min(d, matches.get(off, 64))
        self._index.append((t, h))
        kept: list[_Run] = []
        used: set[float] = set()
        for run in self._runs:
            best = min(
                (o for o in matches if abs(o - run.offset) <= p.offset_tolerance_s),
                key=lambda o: (abs(o - run.offset), matches[o]), default=None)
            if best is not None:
                used.add(best)
                run.last = t
                run.drift = max(run.drift, hamming(run.first_hash, h))
                run.dist_sum += matches[best]
                run.n += 1
                kept.append(run)
            elif t - run.last <= p.gap_s:
                kept.append(run)
        for off, d in matches.items():
            if off in used or any(abs(off - r.offset) <= p.offset_tolerance_s for r in kept):
                continue
            kept.append(_Run(off, t, t, h, 0, d, 1))
        self._runs = kept
        best_run = max(
            (r for r in kept if r.last == t and r.drift >= p.min_drift_bits),
            key=lambda r: r.last - r.start, default=None)
        if best_run is None:
            return False, 0.0, {}
        length = best_run.last - best_run.start
        closeness = 1 - (best_run.dist_sum / best_run.n) / max(p.max_hamming + 1, 1)
        conf = 0.6 + 0.15 * min(1.0, length / max(p.min_s * 2, 1e-6)) \
            + 0.1 * min(1.0, best_run.drift / 32) + 0.15 * closeness
        evidence = {"offset_s": round(best_run.offset, 2),
                    "mean_hamming": round(best_run.dist_sum / best_run.n, 2),
                    "drift_bits": float(best_run.drift)}
        return True, min(1.0, conf), {**evidence, "since": best_run.start}
