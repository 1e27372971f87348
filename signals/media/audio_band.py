"""The band check: can the audio reaching the detectors carry a shutter's clicks at all?

Not a signal: a limit of what the sidecar can hear, reported to clinicians in the ``status``
message (``limits``), never as an alert about the patient.

Why
---
``audio.shutter`` listens at 3-7.5 kHz. A call's audio can arrive at 48 kHz and still hold
nothing above 4 kHz: a Bluetooth headset in its telephone mode (8 kHz CVSD), an uplink so
starved that Opus falls back to narrowband (under about 10 kbit/s), a telephone bridge. The
shutter detector is then deaf, and a clinician who is not told would take its silence for
"no shutter heard" (``bench/RESULTS.md``: recall 0 of 12 at 8 and 11 kHz and through Opus at
8 kbit/s).

Method
------
Every 4 ms frame whose whole-band level is at least ``sound_dbfs`` is *sound*. For each, the
level in ``top_band_hz`` (6.5-7.5 kHz) is taken under the frame's whole-band level. Wideband
audio puts some of its sound up there: fricatives (s, f, t), breath and room noise bring the
loudest 1 % of frames within about 1-42 dB of the whole band. Band-limited audio holds only
filter leakage there, or the noise Opus fills an empty band with when it codes it anyway (a
browser sends fullband Opus whatever the microphone gives it): 52 dB and more under it.
Once ``min_sound_s`` of sound has been heard, the ``percentile`` (99th, nearest rank) of the
difference over the last ``window_s`` of sound decides, and again after every further 0.5 s
of sound: under ``narrow_below_db`` (-48 dB) the audio is narrowband, above ``wide_above_db``
(-44 dB) wideband again; in between the previous state holds. Sound is enough: speech, noise
or music. The cost is one band level per frame and one partial sort per 0.5 s of sound
(a few µs per 20 ms of audio).

The thresholds were set on the Spanish and Russian voices of ``bench/bench_audio_eval.py``'s
recorded speech and on espeak-ng speech: wideband as recorded, at 16 kHz and after Opus, its
99th percentile never fell under -42 dB over any 10 s; 8 kHz audio after Opus at 24-48
kbit/s never rose above -52.5 dB (plain 8 kHz audio: -66 dB). A 95th percentile separated
them less (-46 and -55.6 dB).

Known failure modes: audio with no content above 6.5 kHz for acoustic reasons (a very
muffled microphone under a blanket, a voice-only channel after heavy noise suppression) reads
as narrowband; that errs on the side of telling the clinician. A sample rate of 12 kHz or
more whose audio was low-passed at 6-6.5 kHz reads as wideband or narrowband by how much
leaks (the 8 ms window's sidelobes): the shutter detector is weak there either way.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from signals.media.audio_params import BandParams
from signals.media.audio_stream import HOP, RATE, FrameFeatures

__all__ = ["NARROWBAND", "BandCheck", "BandState", "narrowband_note"]

BandState = Literal["unknown", "wideband", "narrowband"]
#: the ``limits`` value a narrowband audio track gets in the ``status`` message
NARROWBAND = "narrowband"
_FRAME_S = HOP / RATE
#: decide again after this many new frames of sound (0.5 s): the verdict moves over seconds,
#: and a percentile every 100 ms batch would cost a fifth of the audio analysis
_EVERY = 125


class BandCheck:
    """Follows whether the audio is narrowband (see the module docstring).

    ``push(features)`` after every batch; ``state`` is ``"unknown"`` until ``min_sound_s``
    of sound was heard, then ``"wideband"`` or ``"narrowband"``; ``level_db`` is the last
    percentile measured (``None`` before)."""

    def __init__(self, params: BandParams) -> None:
        self.p = params
        self._cap = max(1, round(params.window_s / _FRAME_S))
        self._need = max(1, round(params.min_sound_s / _FRAME_S))
        self._diffs: npt.NDArray[np.float64] = np.zeros(0)
        self._fresh = _EVERY  # sound frames since the last decision (decide at once when due)
        self.state: BandState = "unknown"
        self.level_db: float | None = None

    def reset(self) -> None:
        """Forget what was heard (the stream's rate changed: perhaps another device)."""
        self._diffs = np.zeros(0)
        self._fresh = _EVERY
        self.state = "unknown"
        self.level_db = None

    def push(self, f: FrameFeatures) -> None:
        p = self.p
        if not p.enabled or len(f) == 0:
            return
        sound = f.full_db >= p.sound_dbfs
        if not sound.any():
            return
        new = (f.top_db - f.full_db)[sound]
        self._diffs = np.concatenate([self._diffs, new])[-self._cap:]
        self._fresh += len(new)
        if len(self._diffs) < self._need or self._fresh < _EVERY:
            return
        self._fresh = 0
        k = min(len(self._diffs) - 1, round(p.percentile / 100 * (len(self._diffs) - 1)))
        level = float(np.partition(self._diffs, k)[k])
        self.level_db = level
        if level < p.narrow_below_db:
            self.state = "narrowband"
        elif level > p.wide_above_db or self.state == "unknown":
            self.state = "wideband"


def narrowband_note(level_db: float | None, params: BandParams) -> str:
    """A sentence for a user when a file's audio read narrowband (``analyze``): its sample
    rate may be high, but what it holds cannot carry a shutter's clicks."""
    lo = params.top_band_hz[0]
    measured = ("" if level_db is None
                else f" (its loudest sounds there are {-level_db:.0f} dB down)")
    return (f"the audio holds almost nothing above {lo / 1000:g} kHz{measured}, as after a "
            "telephone line or a headset in its telephone mode; audio.shutter listens for clicks "
            "up to 7.5 kHz, so a shutter here is likely missed")
