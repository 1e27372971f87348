"""What a media detector reports: one episode of one media signal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Detection"]


@dataclass(frozen=True, slots=True)
class Detection:
    """An episode of a media signal, in seconds from the start of the stream.

    ``end`` is ``None`` while the episode is still going on (a live stream) or for an
    instantaneous event. ``confidence`` is 0..1 and describes the observation, not intent.
    """

    signal: str
    t: float
    end: float | None
    confidence: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``analyze --json`` line of CONTRACT.md."""
        return {
            "signal": self.signal,
            "t": round(self.t, 3),
            "end": None if self.end is None else round(self.end, 3),
            "confidence": round(self.confidence, 3),
            "evidence": self.evidence,
        }
