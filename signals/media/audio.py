"""The audio detectors behind one seam: :class:`AudioAnalyzer` (docs/internals.md).

``AudioAnalyzer(params).push(samples, sample_rate, t)`` takes float32 mono samples in -1..1
at any rate, in chunks of any size (live: 20 ms Opus frames at 48 kHz; ``analyze``: whatever
the file decodes to), with ``t`` the chunk's start in seconds from the stream start, and
returns the :class:`~signals.media.detection.Detection` episodes that became certain.
``finish(t)`` flushes what is still pending at the end of the stream.

Inside, the stream is resampled exactly (:class:`~signals.media.audio_stream.StreamResampler`)
to 16 kHz in batches of ``batch_s`` (0.1 s), measured in 8 ms windows every 4 ms (band
levels, spectral flatness) and in 10 ms blocks (level), and handed to the two detectors:

* ``audio.shutter`` — :mod:`signals.media.audio_shutter`
* ``audio.virtual_source`` — :mod:`signals.media.audio_floor`

and to the band check (:mod:`signals.media.audio_band`), whose ``band.state`` says whether the
audio can carry a shutter's clicks at all; ``limit`` is that verdict as the media limit a
clinician's ``status`` reports (not a signal).

State is a few hundred samples and a few dozen numbers; a jump in ``t`` (dropped frames) or a
change of rate restarts the framing. Pure: no I/O, no clock, no logging of the audio itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from signals.errors import MediaError
from signals.media.audio_band import NARROWBAND, BandCheck
from signals.media.audio_floor import VirtualSourceDetector
from signals.media.audio_params import (
    AudioParams,
    BandParams,
    ShutterParams,
    VirtualSourceParams,
    audio_params_from_dict,
)
from signals.media.audio_shutter import ShutterDetector
from signals.media.audio_stream import Framer, StreamResampler
from signals.media.detection import Detection

__all__ = [
    "AudioAnalyzer",
    "AudioParams",
    "BandParams",
    "ShutterParams",
    "VirtualSourceParams",
    "audio_params_from_dict",
]

MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHUNK_S = 60.0


class AudioAnalyzer:
    """All audio detectors over one audio track (see the module docstring)."""

    def __init__(self, params: AudioParams | Mapping[str, Any] | None = None) -> None:
        if isinstance(params, AudioParams):
            self.params = params
        else:
            self.params = audio_params_from_dict(params)
        self.shutter = ShutterDetector(self.params.shutter)
        self.virtual_source = VirtualSourceDetector(self.params.virtual_source)
        self.band = BandCheck(self.params.band)
        self._rate: int | None = None
        self._next_t = 0.0
        self._resampler: StreamResampler | None = None
        self._framer: Framer | None = None
        self._finished = False
        self._pending: list[npt.NDArray[np.float32]] = []
        self._pending_n = 0

    @property
    def limit(self) -> str | None:
        """What this audio cannot carry: ``"narrowband"`` (no shutter can be heard), else
        ``None``."""
        return NARROWBAND if self.band.state == NARROWBAND else None

    def push(self, samples: npt.NDArray[Any], sample_rate: int, t: float) -> list[Detection]:
        """Analyse one chunk; returns the episodes it completed."""
        x = self._check(samples, sample_rate, t)
        if self._finished:
            raise MediaError("audio analyzer already finished; make a new one per stream")
        if (self._resampler is None or self._framer is None or sample_rate != self._rate
                or abs(t - self._next_t) > self.params.max_jump_s):
            early = self._restart(sample_rate, t)
        else:
            early = []
        assert self._resampler is not None and self._framer is not None
        self._next_t = t + len(x) / sample_rate
        self._pending.append(x)
        self._pending_n += len(x)
        if self._pending_n < self.params.batch_s * sample_rate:
            return early
        return early + self._run()

    def _run(self) -> list[Detection]:
        if not self._pending or self._resampler is None or self._framer is None:
            return []
        x = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_n = [], 0
        feats = self._framer.push(self._resampler.push(x))
        out = self.virtual_source.push(feats)
        out.extend(self.shutter.push(feats))
        self.band.push(feats)
        return out

    def finish(self, t: float) -> list[Detection]:
        """Close the stream at ``t``; returns the episodes still pending. Idempotent."""
        if self._finished:
            return []
        out = self._run()
        self._finished = True
        out.extend(self.virtual_source.finish(t))
        out.extend(self.shutter.finish(t))
        return out

    def _restart(self, rate: int, t: float) -> list[Detection]:
        out = self._run()
        if self._rate is not None:
            self.shutter.reset()
            self.virtual_source.interrupt()
            if rate != self._rate:
                self.band.reset()
        self._rate = rate
        self._resampler = StreamResampler(rate)
        self._framer = Framer(self.params.shutter.band_hz, t, self.params.band.top_band_hz)
        return out

    @staticmethod
    def _check(samples: npt.NDArray[Any], sample_rate: int, t: float) -> npt.NDArray[np.float32]:
        if not isinstance(samples, np.ndarray):
            raise MediaError("audio samples must be a numpy array")
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int | np.integer):
            raise MediaError(f"audio sample rate must be an integer, not {sample_rate!r}")
        if not MIN_RATE <= sample_rate <= MAX_RATE:
            raise MediaError(f"audio sample rate {sample_rate} Hz is outside "
                             f"{MIN_RATE}..{MAX_RATE} Hz")
        if not isinstance(t, int | float | np.floating) or not math.isfinite(t) or t < 0:
            raise MediaError(f"audio chunk time must be a finite number of seconds >= 0, not {t!r}")
        if samples.ndim != 1:
            raise MediaError(f"audio samples must be mono (1-D), got shape {samples.shape}")
        if len(samples) > MAX_CHUNK_S * sample_rate:
            raise MediaError(f"audio chunk longer than {MAX_CHUNK_S:.0f} s; push smaller chunks")
        if samples.dtype.kind in "iu":
            scale = float(2 ** (8 * samples.dtype.itemsize - 1))
            offset = scale if samples.dtype.kind == "u" else 0.0
            return np.asarray((samples.astype(np.float32) - offset) / scale, dtype=np.float32)
        if samples.dtype.kind != "f":
            raise MediaError(f"audio samples must be float or integer PCM, not {samples.dtype}")
        x = np.asarray(samples, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise MediaError("audio samples contain NaN or infinite values")
        return x


