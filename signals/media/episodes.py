"""Turning per-sample conditions into episodes with a minimum duration and a hold.

A detector calls :meth:`Episode.update` with ``active`` for each sample it analyses. An
episode starts at the first active sample, is *confirmed* once it lasted ``min_s`` (a
:class:`Detection` with ``end=None`` and ``evidence["episode"] == "open"`` is returned), and
closes after ``gap_s`` without an active sample (the closed :class:`Detection` carries
``end`` and ``evidence["episode"] == "closed"``). Short gaps are bridged, so one missed
sample does not split an episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from signals.media.detection import Detection

__all__ = ["Episode"]


class Episode:
    """The state machine of one media signal."""

    def __init__(self, signal: str, min_s: float, gap_s: float,
                 word: Callable[[Detection], None] | None = None) -> None:
        """``word``, when given, rewrites the evidence of each reported detection from the
        episode as a whole (its mean confidence), where the evidence is otherwise the last
        sample's."""
        self.signal = signal
        self.min_s = min_s
        self.gap_s = gap_s
        self._word = word
        self._start: float | None = None
        self._last: float = 0.0
        self._open = False
        self._conf_sum = 0.0
        self._conf_n = 0
        self._evidence: dict[str, Any] = {}

    @property
    def active(self) -> bool:
        """True while an episode is confirmed and not yet closed."""
        return self._open

    def update(
        self,
        active: bool,
        t: float,
        confidence: float = 1.0,
        evidence: dict[str, Any] | None = None,
        since: float | None = None,
    ) -> list[Detection]:
        """Feed one sample at ``t``; ``since`` backdates the start of a new episode."""
        out: list[Detection] = []
        if active:
            if self._start is None:
                self._start = t if since is None else min(since, t)
                self._conf_sum, self._conf_n = 0.0, 0
            self._last = t
            self._conf_sum += confidence
            self._conf_n += 1
            if evidence is not None:
                self._evidence = dict(evidence)
            if not self._open and t - self._start >= self.min_s:
                self._open = True
                out.append(self._detection(None, "open"))
        elif self._start is not None and t - self._last > self.gap_s:
            out.extend(self._close(self._last))
        return out

    def finish(self, t: float) -> list[Detection]:
        """Close the episode at the end of the stream (``t``)."""
        if self._start is None:
            return []
        end = t if t - self._last <= self.gap_s else self._last
        if not self._open and end - self._start >= self.min_s:
            self._open = True
        return self._close(end)

    def _close(self, end: float) -> list[Detection]:
        out = [self._detection(end, "closed")] if self._open else []
        self._start, self._open = None, False
        return out

    def _detection(self, end: float | None, state: str) -> Detection:
        assert self._start is not None
        conf = self._conf_sum / self._conf_n if self._conf_n else 0.0
        evidence = {**self._evidence, "episode": state}
        detection = Detection(self.signal, self._start, end,
                              round(min(1.0, max(0.0, conf)), 3), evidence)
        if self._word is not None:
            self._word(detection)
        return detection
