"""Small deterministic analyzers for testing the receiver's plumbing (the real detectors
are tested in their own modules; test_receiver_detectors.py runs them end to end)."""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt

from signals.media.detection import Detection

__all__ = ["DarkVideo", "SilentAudio"]


class DarkVideo:
    """Reports ``video.obscured`` once the picture stays dark for ``hold`` seconds."""

    def __init__(self, hold: float = 1.0) -> None:
        self.hold = hold
        self.times: list[float] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.threads: set[str] = set()
        self.finished_at: float | None = None
        self._dark_since: float | None = None
        self._open = False

    def push(self, picture: npt.NDArray[np.uint8], t: float) -> list[Detection]:
        self.times.append(t)
        self.shapes.add(picture.shape)
        self.threads.add(threading.current_thread().name)
        mean = float(picture.mean())
        if mean < 20:
            if self._dark_since is None:
                self._dark_since = t
            if not self._open and t - self._dark_since >= self.hold:
                self._open = True
                return [Detection("video.obscured", self._dark_since, None, np.float64(0.8),
                                  {"mean_luma": np.float32(mean), "method": "test"})]
        else:
            self._dark_since = None
            self._open = False
        return []

    def finish(self, t: float) -> list[Detection]:
        self.finished_at = t
        return []


class SilentAudio:
    """Reports ``audio.virtual_source`` once every sample has been exactly 0 for ``hold`` s."""

    def __init__(self, hold: float = 0.5) -> None:
        self.hold = hold
        self.rates: set[int] = set()
        self.dtypes: set[str] = set()
        self.seconds = 0.0
        self.peak = 0.0
        self.finished_at: float | None = None
        self._silent_since: float | None = None
        self._fired = False

    def push(self, samples: npt.NDArray[np.float32], sample_rate: int, t: float) -> list[Detection]:
        self.rates.add(sample_rate)
        self.dtypes.add(str(samples.dtype))
        self.seconds += len(samples) / sample_rate
        self.peak = max(self.peak, float(np.abs(samples).max(initial=0.0)))
        if np.any(samples != 0):
            self._silent_since = None
            return []
        if self._silent_since is None:
            self._silent_since = t
        end = t + len(samples) / sample_rate
        if not self._fired and end - self._silent_since >= self.hold:
            self._fired = True
            return [Detection("audio.virtual_source", self._silent_since, end, 0.7,
                              {"floor_dbfs": -120.0})]
        return []

    def finish(self, t: float) -> list[Detection]:
        self.finished_at = t
        return []
