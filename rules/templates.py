"""Safe message templates: ``string.Template`` (``$name`` / ``${name}``) over the evidence.
No attribute access, no indexing, no code: only names, looked up in a flat mapping; a
missing name stays visible as written rather than raising."""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from typing import Any

__all__ = ["identifiers", "render"]

_MISSING = object()


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.2f}".rstrip("0").rstrip(".")
    if isinstance(v, list | tuple | dict):
        return "…"
    return str(v)[:120]


@functools.cache
def identifiers(template: string.Template) -> tuple[str, ...]:
    """The names a template uses (computed once per template)."""
    return tuple(template.get_identifiers())


def render(template: string.Template, lookup: Callable[[str], Any]) -> str:
    """Fill ``template``; ``lookup(name)`` returns the value or ``None`` when unknown."""
    values = {}
    for name in identifiers(template):
        v = lookup(name)
        if v is not None:
            values[name] = _text(v)
    return template.safe_substitute(values)
