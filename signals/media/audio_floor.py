"""``audio.virtual_source``: the microphone has no acoustic noise floor.

Method
------
A real microphone in a real room never produces digital silence: even a quiet room with a
good microphone leaves a floor around -70..-50 dBFS. A loopback device, a virtual
microphone fed by software, or a file being played in, does: its pauses are exact zeros (or
within a bit or two of them). Each 10 ms block whose level is below ``digital_dbfs``
(-98 dBFS by default, where exact zeros are ``-inf``) is digital silence; a run of such
blocks *between sounds* lasting ``min_gap_s``..``max_gap_s`` is a gap. Once at least
``min_silence_s`` of silence in at least ``min_gaps`` gaps has been seen, the episode is
reported, once; it closes (and may be reported again later) after ``clear_floor_s`` of
pauses that do show a real floor (quiet, not digital, for at least ``floor_run_s`` at a
time, so the fade at the end of a word does not count). Evidence is forgotten after
``reset_floor_s`` of such floor, so occasional zeros from a real microphone never add up.
An Opus round trip keeps digital silence near zero (checked by the tests), so the live
path sees the same thing: through Chromium's WebRTC path exact zeros arrive at about
-112 dBFS. The threshold sits well below -90 because a browser's noise suppression (on by
default) lowers a quiet room's floor by 15-20 dB: a -75 dBFS room reached the sidecar at
about -91 dBFS in the pauses, -80 dBFS at about -96 (measured through Chromium; the first
threshold, -90, fired on both).

Confidence 0.6 at the threshold, growing with the amount of silence to at most 0.85.

Known failure modes: a browser track that is *muted* sends zeros (runs longer than
``max_gap_s`` are not counted, but frequent short mutes can add up); aggressive noise gates
(some headsets, noise-suppression apps) also output zeros between words, and a browser's
noise suppression can push a very quiet room (about -85 dBFS before it, quieter than most
microphones' own noise) as low as digital silence; a virtual source playing material that
has its own noise floor, or 16-bit material dithered at about -93 dBFS, is not detected.
"""

from __future__ import annotations

import math
from typing import Any

from signals.media.audio_params import VirtualSourceParams
from signals.media.audio_stream import FrameFeatures
from signals.media.detection import Detection

__all__ = ["SIGNAL", "VirtualSourceDetector"]

SIGNAL = "audio.virtual_source"
_BLOCK_S = 0.01


class VirtualSourceDetector:
    """Counts digital-silence gaps between sounds (see the module docstring)."""

    def __init__(self, params: VirtualSourceParams) -> None:
        self.p = params
        self._heard = False
        self._quiet_run = 0
        self._run_start: float | None = None
        self._run_blocks = 0
        self._run_peak = -math.inf
        self._open = False
        self._quiet_run = 0
        self._clear_evidence()

    def _clear_evidence(self) -> None:
        self._silence = 0.0
        self._gaps = 0
        self._first: float | None = None
        self._loudest = -math.inf
        self._floor_s = 0.0

    def interrupt(self) -> None:
        """The stream has a hole: the run in progress is of unknown length, drop it."""
        self._run_start = None
        self._run_blocks = 0
        self._run_peak = -math.inf
        self._heard = False
        self._quiet_run = 0

    def push(self, f: FrameFeatures) -> list[Detection]:
        if not self.p.enabled:
            return []
        out: list[Detection] = []
        digital_db, quiet_db = self.p.digital_dbfs, self.p.quiet_dbfs
        for t_raw, level_raw in zip(f.block_t.tolist(), f.block_db.tolist(), strict=True):
            t, level = float(t_raw), float(level_raw)
            if level < digital_db:
                if self._run_start is None:
                    self._run_start, self._run_blocks, self._run_peak = t, 0, -math.inf
                self._run_blocks += 1
                self._run_peak = max(self._run_peak, level)
                continue
            if self._run_start is not None:
                det = self._end_run()
                if det is not None:
                    out.append(det)
            self._heard = True
            if level >= quiet_db:
                self._quiet_run = 0
                continue
            self._quiet_run += 1
            run_s = self._quiet_run * _BLOCK_S
            if run_s + 1e-9 < self.p.floor_run_s:
                continue
            # A pause with a real noise floor: evidence against a virtual source.
            self._floor_s += self.p.floor_run_s if abs(run_s - self.p.floor_run_s) < 1e-9 \
                else _BLOCK_S
            if self._open and self._floor_s >= self.p.clear_floor_s:
                self._open = False
                self._clear_evidence()
            elif not self._open and self._floor_s >= self.p.reset_floor_s:
                self._clear_evidence()
        return out

    def finish(self, t: float) -> list[Detection]:
        return []

    def _end_run(self) -> Detection | None:
        start, length, peak = self._run_start, self._run_blocks * _BLOCK_S, self._run_peak
        self._run_start = None
        if start is None or not self._heard:
            return None
        if not (self.p.min_gap_s <= length + 1e-9 <= self.p.max_gap_s):
            return None
        self._silence += length
        self._gaps += 1
        self._floor_s = 0.0
        self._loudest = max(self._loudest, peak)
        if self._first is None:
            self._first = start
        if self._open or self._silence < self.p.min_silence_s or self._gaps < self.p.min_gaps:
            return None
        self._open = True
        extra = (self._silence - self.p.min_silence_s) / self.p.min_silence_s
        evidence: dict[str, Any] = {
            "method": "digital-silence",
            "silence_s": round(self._silence, 2),
            "gaps": self._gaps,
            "silence_max_dbfs": None if math.isinf(self._loudest) else round(self._loudest, 1),
            "threshold_dbfs": self.p.digital_dbfs,
        }
        return Detection(SIGNAL, round(self._first, 3), None,
                         round(min(0.85, 0.6 + 0.25 * min(extra, 1.0)), 3), evidence)
