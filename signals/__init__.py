"""Signal types, the signal catalogue, and detectors. Pure: no I/O."""

from signals.catalog import CATALOGUE, SignalSpec, make_signal, spec_for, validate_data
from signals.consent import FULL_MONITORING, NO_CONSENT, Consent
from signals.errors import (
    AuthError,
    ConfigError,
    InvalidSignal,
    MediaError,
    RuleError,
    SessionguardError,
    StorageError,
)
from signals.model import Signal

__all__ = [
    "CATALOGUE",
    "FULL_MONITORING",
    "NO_CONSENT",
    "AuthError",
    "ConfigError",
    "Consent",
    "InvalidSignal",
    "MediaError",
    "RuleError",
    "SessionguardError",
    "Signal",
    "SignalSpec",
    "StorageError",
    "make_signal",
    "spec_for",
    "validate_data",
]
