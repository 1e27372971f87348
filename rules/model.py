"""What the rules engine hands back: :class:`Alert`, :class:`Skip`, :class:`Outcome`,
and the :class:`Severity` scale and :class:`Diagnostic` of rule validation."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

from signals.model import Signal

__all__ = ["Alert", "Diagnostic", "Outcome", "Severity", "Skip"]


class Severity(enum.IntEnum):
    """``info`` < ``notice`` < ``warning`` < ``critical``; compare with ``<``."""

    INFO = 0
    NOTICE = 1
    WARNING = 2
    CRITICAL = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Severity:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {value!r} (info, notice, warning, critical)") from None

    def __str__(self) -> str:
        return self.label


@dataclass(frozen=True, slots=True)
class Alert:
    """One explained alert: which rule, what evidence, how confident, what to do."""

    id: str
    rule: str
    severity: Severity
    title: str
    message: str
    suggested_response: tuple[str, ...]
    evidence: tuple[Signal, ...]
    confidence: float
    session: str
    participant: str
    at: int
    fingerprint: str
    tags: tuple[str, ...] = ()

    def to_wire(self, seq: int) -> dict[str, Any]:
        """The CONTRACT.md alert message, with the per-session ``seq`` the caller assigns."""
        return {
            "type": "alert",
            "id": self.id,
            "seq": seq,
            "session": self.session,
            "participant": self.participant,
            "rule": self.rule,
            "severity": self.severity.label,
            "title": self.title,
            "message": self.message,
            "suggested_response": list(self.suggested_response),
            "evidence": [s.evidence() for s in self.evidence],
            "confidence": self.confidence,
            "tags": list(self.tags),
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class Skip:
    """A rule that could not run: ``reason`` ``"consent"``, the consent in force does not
    cover its scopes (``missing``; reported once per session, rule and consent change), or
    ``"alert_limit"``, the session has raised the engine's ``max_alerts_per_session`` and
    raises no more (reported once, for the first alert it held back). Either way the
    clinician knows what is *not* being watched (never silently blind)."""

    rule: str
    session: str
    participant: str
    signal: str
    at: int
    missing: tuple[str, ...]
    reason: str = "consent"
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"rule": self.rule, "session": self.session, "participant": self.participant,
               "signal": self.signal, "at": self.at, "missing": list(self.missing),
               "reason": self.reason}
        if self.limit is not None:
            out["limit"] = self.limit
        return out


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one ``feed`` or ``tick`` produced."""

    alerts: tuple[Alert, ...] = ()
    derived: tuple[Signal, ...] = ()
    skipped: tuple[Skip, ...] = ()
    suppressed: int = field(default=0)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.derived or self.skipped)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a rule file. ``rule`` is the rule id, or ``None`` for the file."""

    level: Literal["error", "warning"]
    file: str
    rule: str | None
    message: str

    def __str__(self) -> str:
        where = self.file + (f": rule {self.rule}" if self.rule else "")
        return f"{where}: {self.level}: {self.message}"
