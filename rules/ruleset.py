"""Compiled rules, indexed by the signals they listen to."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Literal

from rules.model import Diagnostic, Severity
from rules.predicates import Predicate

__all__ = ["CompiledRule", "Ruleset", "Step"]

Kind = Literal["match", "hold", "absent", "count", "distinct", "sequence", "all_of"]


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a ``sequence`` or ``all_of`` correlation."""

    signal: str
    when: Predicate | None


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready to run. ``kind`` is its correlation; durations are milliseconds."""

    id: str
    index: int
    file: str
    title: str
    description: str
    tags: tuple[str, ...]
    signals: frozenset[str]
    when: Predicate | None
    exceptions: tuple[tuple[str, Predicate], ...]
    requires: frozenset[str]
    severity: Severity
    capture: bool
    message: string.Template
    agreed_message: string.Template | None
    suggested_response: tuple[str, ...]
    group_by: str
    kind: str
    hold_ms: int
    window_ms: int
    n: int
    field: str | None
    steps: tuple[Step, ...]
    confidence: float
    cooldown_ms: int
    max_per_session: int
    fingerprint: tuple[str, ...]
    inhibit_tags: frozenset[str]
    inhibit_ms: int
    #: suggested responses while recording is agreed (None: ``suggested_response``)
    agreed_suggested_response: tuple[str, ...] | None = None

    @property
    def needs_context(self) -> bool:
        """Whether running the rule evaluates a condition over the signal's data."""
        return bool(self.when is not None or self.exceptions or self.steps
                    or self.kind == "distinct")


@dataclass(frozen=True)
class Ruleset:
    """The loaded rules in file order, plus an index from signal name to the rules that
    listen to it (so most rules never run for most signals)."""

    rules: tuple[CompiledRule, ...]
    warnings: tuple[Diagnostic, ...] = ()
    by_signal: dict[str, tuple[CompiledRule, ...]] = field(init=False)
    needs_context: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        index: dict[str, list[CompiledRule]] = {}
        for r in self.rules:
            for s in sorted(r.signals):
                index.setdefault(s, []).append(r)
        object.__setattr__(self, "by_signal", {k: tuple(v) for k, v in index.items()})
        object.__setattr__(self, "needs_context",
                           frozenset(r.index for r in self.rules if r.needs_context))

    def get(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    @property
    def signals(self) -> frozenset[str]:
        return frozenset(self.by_signal)
