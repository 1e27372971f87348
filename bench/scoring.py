"""Precision/recall bookkeeping shared by the detector evaluation benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Score"]


@dataclass
class Score:
    """True/false positives and misses of one signal over an evaluation set."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)
    false_alarms: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0
