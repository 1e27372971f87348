"""Streaming front end of the audio detectors: exact chunk-by-chunk resampling to the
working rate and 10 ms framing: 8 ms spectra every 4 ms, and 10 ms levels.

:class:`StreamResampler` gives, sample for sample, what one call of
``scipy.signal.resample_poly`` over the whole stream would give (up to the last few
samples, which it holds back until the filter has seen what follows them), whatever the
chunk sizes. That matters: resampling each 20 ms frame on its own would put a click at every
frame boundary, exactly what the shutter detector looks for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt
from scipy import signal as sps

__all__ = ["BLOCK", "HOP", "ONSET_FLOOR", "ONSET_LAGS", "RATE", "WIN", "FrameFeatures", "Framer",
           "StreamResampler"]

RATE = 16_000          # working rate
HOP = RATE // 250      # 4 ms between analysis windows
WIN = 2 * HOP          # 8 ms Hann window
BLOCK = RATE // 100    # 10 ms level blocks (noise floor)
#: onset flatness compares each window with the windows this many hops before it (2 and 3:
#: 8-12 ms earlier, so they do not overlap it)
ONSET_LAGS = (2, 3)
#: ... and counts a band bin that did not rise as this fraction of its power
ONSET_FLOOR = 0.1

Float = npt.NDArray[np.float32]


class StreamResampler:
    """Resample a stream from ``rate`` to :data:`RATE` in arbitrary chunks."""

    def __init__(self, rate: int) -> None:
        ratio = Fraction(RATE, rate)
        self.up, self.down = ratio.numerator, ratio.denominator
        # resample_poly's default filter spans 10 * max(up, down) upsampled samples each side.
        self._ctx = math.ceil(10 * max(self.up, self.down) / self.up) + 1
        # The filter resample_poly would design on every call, designed once.
        half = 10 * max(self.up, self.down)
        self._h = np.ones(1, dtype=np.float32) if self.up == self.down else sps.firwin(
            2 * half + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)
        ).astype(np.float32)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0      # input index of _buf[0]; always a multiple of ``down``
        self._next_out = 0       # next output index to emit

    def push(self, x: Float) -> Float:
        """Feed input samples; returns the output samples that are now final."""
        if self.up == self.down == 1:
            return np.asarray(x, dtype=np.float32)
        self._buf = np.concatenate([self._buf, np.asarray(x, dtype=np.float32)])
        end_in = self._buf_start + len(self._buf)
        # Output j sits at input position j*down/up; it is final once ctx inputs follow it.
        last_ok = math.floor((end_in - self._ctx) * self.up / self.down)
        if last_ok < self._next_out:
            return np.zeros(0, dtype=np.float32)
        y = sps.resample_poly(self._buf, self.up, self.down, window=self._h)
        first_out = self._buf_start * self.up // self.down
        lo = self._next_out - first_out
        hi = min(last_ok - first_out + 1, len(y))
        out = np.asarray(y[lo:hi], dtype=np.float32)
        self._next_out = first_out + hi
        # Keep ctx inputs before the next output, aligned down to a multiple of ``down``.
        keep_from = math.floor(self._next_out * self.down / self.up) - self._ctx
        keep_from = max(self._buf_start, keep_from - keep_from % self.down)
        self._buf = self._buf[keep_from - self._buf_start:]
        self._buf_start = keep_from
        return out


@dataclass(frozen=True, slots=True)
class FrameFeatures:
    """Features of the frames a chunk completed (arrays of equal length per time base).

    Every :data:`HOP` (4 ms) an 8 ms Hann window: ``t`` (window centre, seconds from stream
    start), ``high_db`` / ``full_db`` / ``top_db`` (levels of the click band, of everything from
    60 Hz and of the band check's top band, dBFS) and ``onset_flatness``: the
    spectral flatness (0 tonal .. 1 white) of what is *new* in the window, its high-band power
    spectrum minus the larger of the two windows 8 and 12 ms before it (:data:`ONSET_LAGS`),
    bin by bin, where a bin that did not rise counts as :data:`ONSET_FLOOR` of its power (with
    a floor of 1 it is the window's plain flatness). A click over voiced speech or a chime
    keeps a high onset flatness (the steady harmonics are taken away), while the window's
    plain flatness drops with the harmonics underneath. Every :data:`BLOCK` (10 ms), for the
    noise floor: ``block_t`` (block start) and ``block_db`` (level in dBFS, ``-inf`` for
    zeros).
    """

    t: npt.NDArray[np.float64]
    high_db: npt.NDArray[np.float64]
    full_db: npt.NDArray[np.float64]
    onset_flatness: npt.NDArray[np.float64]
    top_db: npt.NDArray[np.float64]
    block_t: npt.NDArray[np.float64]
    block_db: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.t)


class Framer:
    """Cut the working-rate stream into short windows and measure them."""

    def __init__(self, band_hz: tuple[float, float], t0: float,
                 top_hz: tuple[float, float] = (6500.0, 7500.0)) -> None:
        self._t0 = t0
        self._count = 0                      # working-rate samples consumed so far
        self._tail = np.zeros(0, dtype=np.float32)
        self._block_tail = np.zeros(0, dtype=np.float32)
        self._blocks = 0
        self._window = np.hanning(WIN).astype(np.float32)
        self._norm = float(np.sum(self._window**2)) * WIN / 2
        freqs = np.fft.rfftfreq(WIN, 1 / RATE)
        self._high = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
        self._full = freqs >= 60.0
        top = np.flatnonzero((freqs >= top_hz[0]) & (freqs <= top_hz[1]))  # >= 1 bin (params)
        self._top = slice(int(top[0]), int(top[-1]) + 1)
        # the high-band spectra of the last max(ONSET_LAGS) windows (none yet: all new)
        self._recent = np.zeros((max(ONSET_LAGS), int(np.sum(self._high))))

    def push(self, y: Float) -> FrameFeatures:
        block_t, block_db = self._push_blocks(y)
        buf = np.concatenate([self._tail, y]) if len(self._tail) else y
        n = (len(buf) - WIN) // HOP + 1 if len(buf) >= WIN else 0
        start = self._count - len(self._tail)
        self._count += len(y)
        if n <= 0:
            self._tail = buf
            empty = np.zeros(0)
            return FrameFeatures(empty, empty, empty, empty, empty, block_t, block_db)
        frames = np.lib.stride_tricks.sliding_window_view(buf, WIN)[::HOP][:n]
        spec = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2 / self._norm + 1e-14
        high = spec[:, self._high]
        high_db = 10 * np.log10(np.sum(high, axis=1))
        full_db = 10 * np.log10(np.sum(spec[:, self._full], axis=1))
        top_db = 10 * np.log10(np.sum(spec[:, self._top], axis=1))
        onset = _flatness(self._onset(high))
        t = self._t0 + (start + np.arange(n) * HOP + WIN / 2) / RATE
        self._tail = buf[n * HOP:]
        return FrameFeatures(t, high_db, full_db, onset, top_db, block_t, block_db)

    def _onset(self, high: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """What each window adds to the high band over the windows :data:`ONSET_LAGS` before
        it (see :class:`FrameFeatures`)."""
        lags = max(ONSET_LAGS)
        ext = np.concatenate([self._recent, high])
        n = len(high)
        ref = np.maximum.reduce([ext[lags - lag: lags - lag + n] for lag in ONSET_LAGS])
        self._recent = ext[-lags:]
        new: npt.NDArray[np.float64] = np.maximum(high - ref, ONSET_FLOOR * high)
        return new

    def _push_blocks(self, y: Float) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        buf = np.concatenate([self._block_tail, y]) if len(self._block_tail) else y
        n = len(buf) // BLOCK
        blocks = buf[: n * BLOCK].reshape(n, BLOCK)
        with np.errstate(divide="ignore"):
            db = 10 * np.log10(np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64) / BLOCK)
        t = self._t0 + (self._blocks + np.arange(n)) * BLOCK / RATE
        self._blocks += n
        self._block_tail = buf[n * BLOCK:]
        return t, db


def _flatness(power: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Spectral flatness of each row: geometric over arithmetic mean (0 tonal .. 1 white)."""
    out: npt.NDArray[np.float64] = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    return out
