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

import cv2
import numpy as np
import numpy.typing as npt

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


class LoopIndex:
    """Hash index of recent frames and the runs of matches at a consistent offset.

    Both are kept in numpy arrays: a static scene matches nearly every indexed frame (a
    minute at 5 pictures a second is 300 of them) and opens a run per offset, and comparing
    each match with each run one by one in Python cost about as much as the face detector.
    """

    def __init__(self, params: LoopParams) -> None:
        self.p = params
        # the index: times and hashes in [lo, hi) of two growing arrays
        self._t = np.zeros(64, np.float64)
        self._h = np.zeros(64, np.uint64)
        self._lo = self._hi = 0
        # the runs, in the order they were opened: one array per field
        self._off = np.zeros(0, np.float64)
        self._start = np.zeros(0, np.float64)
        self._last = np.zeros(0, np.float64)
        self._first = np.zeros(0, np.uint64)
        self._drift = np.zeros(0, np.int64)
        self._dsum = np.zeros(0, np.int64)
        self._n = np.zeros(0, np.int64)

    def _append(self, t: float, h: int) -> None:
        if self._hi == len(self._t):
            live = self._hi - self._lo
            if live * 2 > len(self._t):  # more than half in use: grow, else compact
                self._t = np.concatenate((self._t, np.zeros_like(self._t)))
                self._h = np.concatenate((self._h, np.zeros_like(self._h)))
            self._t[:live] = self._t[self._lo:self._hi].copy()
            self._h[:live] = self._h[self._lo:self._hi].copy()
            self._lo, self._hi = 0, live
        self._t[self._hi] = t
        self._h[self._hi] = h
        self._hi += 1

    def _matches(self, t: float, h: int) -> tuple[npt.NDArray[np.float64],
                                                   npt.NDArray[np.int64]]:
        """Offsets of the indexed frames ``h`` matches (oldest first, each offset once) and
        the smallest distance at each."""
        p = self.p
        times = self._t[self._lo:self._hi]
        old = times < t - p.window_s  # forget from the oldest end, up to the first kept
        self._lo += int(np.argmin(old)) if not old.all() else len(times)
        times = self._t[self._lo:self._hi]
        near = t - times < p.min_offset_s  # look back up to the first too recent one
        end = int(np.argmax(near)) if near.any() else len(times)
        offsets = t - times[:end]
        dist = np.bitwise_count(self._h[self._lo:self._lo + end] ^ np.uint64(h)).astype(np.int64)
        hit = dist <= p.max_hamming
        offsets, dist = offsets[hit], dist[hit]
        if len(offsets) > 1 and len(np.unique(offsets)) < len(offsets):  # a repeated time
            best: dict[float, int] = {}
            for off, d in zip(offsets.tolist(), dist.tolist(), strict=True):
                best[off] = min(d, best.get(off, 64))
            offsets = np.array(list(best), np.float64)
            dist = np.array(list(best.values()), np.int64)
        return offsets, dist

    def push(self, t: float, h: int) -> tuple[bool, float, dict[str, float]]:
        """Add frame hash ``h`` at ``t``; (replaying, confidence, evidence)."""
        p = self.p
        tol = p.offset_tolerance_s
        offsets, dist = self._matches(t, h)
        self._append(t, h)
        # each run takes the match nearest its offset (ties: the closer hash, then the
        # oldest frame); a run without one is kept while its gap is short
        gap = np.abs(offsets[None, :] - self._off[:, None])
        within = gap <= tol
        gap = np.where(within, gap, np.inf)
        near = within & (gap == gap.min(axis=1, initial=np.inf)[:, None])
        d = np.where(near, dist[None, :], 65)
        near &= d == d.min(axis=1, initial=65)[:, None]
        found = near.any(axis=1)
        best = np.argmax(near, axis=1) if len(offsets) else np.zeros(len(self._off), np.intp)
        keep = found | (t - self._last <= p.gap_s)
        if found.any():
            self._last = np.where(found, t, self._last)
            drift = np.bitwise_count(self._first ^ np.uint64(h)).astype(np.int64)
            self._drift = np.where(found, np.maximum(self._drift, drift), self._drift)
            self._dsum = np.where(found, self._dsum + dist[best], self._dsum)
            self._n = self._n + found
        used = set(offsets[best[found]].tolist())
        kept = self._off[keep]
        # matches no kept run covers open runs of their own
        fresh: list[tuple[float, int]] = []
        free = ~within[keep].any(axis=0)
        for off, dd in zip(offsets[free].tolist(), dist[free].tolist(), strict=True):
            if off in used or any(abs(off - o) <= tol for o, _ in fresh):
                continue
            fresh.append((off, dd))
        k = len(fresh)
        self._off = np.concatenate((kept, [o for o, _ in fresh]))
        self._start = np.concatenate((self._start[keep], np.full(k, t)))
        self._last = np.concatenate((self._last[keep], np.full(k, t)))
        self._first = np.concatenate((self._first[keep], np.full(k, h, np.uint64)))
        self._drift = np.concatenate((self._drift[keep], np.zeros(k, np.int64)))
        self._dsum = np.concatenate((self._dsum[keep], np.array([d for _, d in fresh],
                                                                 np.int64)))
        self._n = np.concatenate((self._n[keep], np.ones(k, np.int64)))
        # the longest run that matched now and whose segment moved
        live = (self._last == t) & (self._drift >= p.min_drift_bits)
        if not live.any():
            return False, 0.0, {}
        length = np.where(live, self._last - self._start, -np.inf)
        i = int(np.argmax(length))
        run_len = float(self._last[i] - self._start[i])
        mean = float(self._dsum[i]) / int(self._n[i])
        drift_bits = int(self._drift[i])
        closeness = 1 - mean / max(p.max_hamming + 1, 1)
        conf = 0.6 + 0.15 * min(1.0, run_len / max(p.min_s * 2, 1e-6)) \
            + 0.1 * min(1.0, drift_bits / 32) + 0.15 * closeness
        evidence = {"offset_s": round(float(self._off[i]), 2),
                    "mean_hamming": round(mean, 2),
                    "drift_bits": float(drift_bits)}
        return True, min(1.0, conf), {**evidence, "since": float(self._start[i])}
