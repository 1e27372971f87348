"""Digital silence on a live audio track: the limit ``muted`` (not a signal).

Not a signal: a limit of what the sidecar can hear, reported to clinicians in the ``status``
message (``limits``), never as an alert about the patient.

Why
---
A microphone track that is muted in the page (``track.enabled = false``: what a call app's
mute button does) is not stopped: Chromium goes on sending about 50 Opus frames a second of
digital silence (decoded, every sample within one step of 16-bit audio of zero), and an
aiortc sender fed zeros does the same. The track keeps arriving, so it reads ``flowing``,
while the sidecar can hear nothing near the patient, a shutter among it. Any sound breaks
digital silence: a quiet room's -75 dBFS floor, through Chromium's noise suppression and
Opus, arrived with a peak of 6 steps or more in every 20 ms frame (measured in headless
Chromium; a muted track's frames peaked at exactly 1 step).

Method
------
Each chunk's peak (:func:`peak_level`, the largest ``|sample|`` as a fraction of full scale:
one ``max`` and one ``min`` over the samples already in hand) is compared with
``max_level`` (:data:`ONE_LSB`, one step of 16-bit audio: exact zeros, and a decoder's
rounding of them). Chunks at or under it extend the current run of silence; the track is
*silent* once a run spans ``after_s`` (:data:`MUTED_AFTER_S`, 5 s) of media time, and not
silent again at the first chunk above it. Time is the chunks' own (seconds from the stream
start), so the tests drive it with made-up times; a run carries over gaps in it (a sender
using DTX sends almost nothing while silent), and restarts if time goes back.

``audio.virtual_source`` (:mod:`signals.media.audio_floor`) counts runs of digital silence
between sounds only up to its ``max_gap_s`` (15 s): longer runs look like a muted track and
are left to this limit, which reports them after 5 s (``after_s`` must stay at or under
``max_gap_s``, so no run of digital silence goes unreported).
"""

from __future__ import annotations

import math
from typing import Any

import numpy.typing as npt

from signals.errors import MediaError

__all__ = ["MUTED", "MUTED_AFTER_S", "ONE_LSB", "SilenceWatch", "peak_level"]

#: the ``limits`` value a track that sends only digital silence gets in the ``status`` message
MUTED = "muted"
#: seconds of digital silence after which a track is reported ``muted``
MUTED_AFTER_S = 5.0
#: one step of 16-bit audio, as a fraction of full scale (-90.3 dBFS)
ONE_LSB = 1.0 / 32768


def peak_level(samples: npt.NDArray[Any]) -> float:
    """The largest ``|sample|`` of PCM ``samples`` (any shape or layout) as a fraction of
    full scale: integer PCM over its full scale (unsigned PCM around its middle), float PCM
    as it is. ``0.0`` for no samples; ``inf`` for NaN or a dtype that is not PCM."""
    if samples.size == 0:
        return 0.0
    kind = samples.dtype.kind
    if kind in "iu":
        scale = float(2 ** (8 * samples.dtype.itemsize - 1))
        offset = scale if kind == "u" else 0.0
        return max(float(samples.max()) - offset, offset - float(samples.min())) / scale
    if kind == "f":
        peak = max(float(samples.max()), -float(samples.min()))
        return peak if not math.isnan(peak) else math.inf
    return math.inf


class SilenceWatch:
    """Follows whether a track sends only digital silence (see the module docstring).

    ``push(peak, t, seconds)`` for each chunk (its :func:`peak_level`, its start ``t`` and
    its length, in seconds); returns :attr:`silent`."""

    __slots__ = ("_since", "after_s", "max_level", "silent")

    def __init__(self, after_s: float = MUTED_AFTER_S, max_level: float = ONE_LSB) -> None:
        if not (isinstance(after_s, int | float) and math.isfinite(after_s) and after_s > 0):
            raise MediaError(f"the muted check's after_s must be a positive number of "
                             f"seconds, not {after_s!r}")
        if not (isinstance(max_level, int | float) and 0 <= max_level < 1):
            raise MediaError(f"the muted check's max_level must be a fraction of full scale "
                             f"(0 <= level < 1), not {max_level!r}")
        self.after_s = float(after_s)
        self.max_level = float(max_level)
        self.silent = False
        self._since: float | None = None  # when the current run of silence began

    def push(self, peak: float, t: float, seconds: float = 0.0) -> bool:
        if not peak <= self.max_level:  # sound (NaN too): the run is over
            self._since = None
            self.silent = False
            return False
        if self._since is None or t < self._since:
            self._since = t
        if t + max(0.0, seconds) - self._since >= self.after_s:
            self.silent = True
        return self.silent
