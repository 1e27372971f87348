"""One way to turn a pydantic ``ValidationError`` into the short, clear sentence that every
schema boundary (signals, consent, wire messages, configuration) reports."""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["first_error"]


def first_error(exc: ValidationError, default_where: str) -> str:
    """``"where: what"`` for the first problem pydantic found (``where`` is the dotted path of
    the offending field, ``default_where`` when the whole value is wrong)."""
    errors = exc.errors()
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return f"{default_where}: invalid"
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or default_where
    return f"{where}: {first['msg']}"
