"""The one exception root of sessionguard.

Every error the project raises on purpose derives from :class:`SessionguardError`::

    SessionguardError
    ├── InvalidSignal          a signal or wire message failed its schema
    ├── ConfigError            a configuration file or value is unusable
    │   └── RuleError          a rule file failed to load (carries its diagnostics)
    ├── AuthError              an access token is missing, forged, expired or of the wrong role
    ├── StorageError           the audit store failed or its hash chain is broken
    └── MediaError             a media file could not be decoded or analysed

Callers at the edges (the CLI, the WebSocket server) catch ``SessionguardError`` and turn it
into one clear sentence; anything else is a bug.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "InvalidSignal",
    "MediaError",
    "RuleError",
    "SessionguardError",
    "StorageError",
]


class SessionguardError(Exception):
    """Root of every error sessionguard raises on purpose."""


class InvalidSignal(SessionguardError):
    """A signal or wire message does not match its schema.

    ``code`` is a short machine-readable reason (``bad_json``, ``unknown_type``,
    ``unknown_signal``, ``bad_field``, ``too_large``...) used in ``error`` messages and metrics.
    """

    def __init__(self, message: str, code: str = "invalid", seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        #: the refused signal's ``seq`` when it carried a usable one (it is acknowledged too:
        #: resending cannot help)
        self.seq = seq


class ConfigError(SessionguardError):
    """A configuration file or value cannot be used."""


class RuleError(ConfigError):
    """Rule files failed to load; ``diagnostics`` lists every problem found."""

    def __init__(self, message: str, diagnostics: list[object] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = list(diagnostics or [])


class AuthError(SessionguardError):
    """An access token was refused. ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class StorageError(SessionguardError):
    """The audit store failed, or its hash chain does not verify."""


class MediaError(SessionguardError):
    """A media file or stream could not be decoded or analysed."""
