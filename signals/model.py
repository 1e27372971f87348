"""The typed event every part of sessionguard passes around: :class:`Signal`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SOURCES", "Signal", "Source"]

Source = Literal["client", "os", "media", "sidecar"]
SOURCES: tuple[Source, ...] = ("client", "os", "media", "sidecar")


@dataclass(frozen=True, slots=True)
class Signal:
    """One observation about one participant of one session.

    ``at`` is the time of the observation in epoch milliseconds (the wire's unit). ``data`` has
    already passed the catalogue's schema for ``name`` (see :mod:`signals.catalog`).
    ``confidence`` is how much the observation itself can be trusted (1.0 for a browser event,
    lower for a detector); it is never a statement about the participant's intent.
    """

    name: str
    at: int
    data: dict[str, Any] = field(default_factory=dict)
    session: str = "default"
    participant: str = "patient"
    source: Source = "client"
    confidence: float = 1.0
    seq: int | None = None

    def evidence(self) -> dict[str, Any]:
        """The signal as it appears in an alert's ``evidence`` list."""
        return {"signal": self.name, "at": self.at, "data": self.data}
