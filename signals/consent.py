"""What the patient agreed to: monitoring scopes and the recording policy."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from signals.errors import InvalidSignal
from signals.schema import first_error

__all__ = [
    "FULL_MONITORING",
    "MONITORING_SCOPES",
    "NO_CONSENT",
    "RECORDING_POLICIES",
    "Consent",
    "RecordingPolicy",
    "Scope",
]

Scope = Literal["device", "audio", "video"]
RecordingPolicy = Literal["prohibited", "patient_allowed", "provider_records"]
MONITORING_SCOPES: tuple[Scope, ...] = ("device", "audio", "video")
RECORDING_POLICIES: tuple[RecordingPolicy, ...] = (
    "prohibited",
    "patient_allowed",
    "provider_records",
)


class _ConsentClaim(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    monitoring: list[Scope] = []
    recording: RecordingPolicy = "prohibited"


@dataclass(frozen=True, slots=True)
class Consent:
    """The consent in force: which scopes may be analysed, and the recording policy.

    The default is the most private: nothing may be analysed, recording is prohibited.
    """

    monitoring: frozenset[Scope] = frozenset()
    recording: RecordingPolicy = "prohibited"

    @classmethod
    def parse(cls, value: Any) -> Consent:
        """Build from a token claim or ``--consent`` value (a dict, or its JSON text)."""
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise InvalidSignal(f"consent is not valid JSON: {exc}", "bad_consent") from exc
        if not isinstance(value, dict):
            raise InvalidSignal('consent must be a JSON object such as {"monitoring": '
                                '["device"], "recording": "prohibited"}', "bad_consent")
        try:
            claim = _ConsentClaim.model_validate(value)
        except ValidationError as exc:
            raise InvalidSignal(f"consent {first_error(exc, 'consent')}", "bad_consent") from exc
        return cls(frozenset(claim.monitoring), claim.recording)

    def allows(self, scope: str) -> bool:
        return scope in self.monitoring

    def with_recording(self, recording: RecordingPolicy) -> Consent:
        return Consent(self.monitoring, recording)

    def to_dict(self) -> dict[str, Any]:
        ordered = [s for s in MONITORING_SCOPES if s in self.monitoring]
        return {"monitoring": ordered, "recording": self.recording}


NO_CONSENT = Consent()
FULL_MONITORING = Consent(frozenset(MONITORING_SCOPES), "prohibited")
