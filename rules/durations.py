"""Durations in rule files: ``500ms``, ``30s``, ``5m``, ``2h`` or a bare number of seconds."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration_ms"]

_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, None: 1000}


def parse_duration_ms(value: object) -> int:
    """Milliseconds in ``value``; ``ValueError`` with a readable reason if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r} (use e.g. 30s, 5m, 2h)")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"bad duration {value!r}: not a finite number of seconds")
        if value < 0:
            raise ValueError(f"bad duration {value!r}: negative")
        return int(value * 1000)
    if not isinstance(value, str):
        raise ValueError(f"bad duration {value!r} (use e.g. 30s, 5m, 2h)")
    m = _RE.match(value)
    if not m:
        raise ValueError(f"bad duration {value!r} (use e.g. 500ms, 30s, 5m, 2h)")
    return int(float(m.group(1)) * _UNIT_MS[m.group(2)])


def format_duration(ms: int) -> str:
    """A calm human phrase: ``less than a second``, ``45 seconds``, ``2 minutes``, ``1 hour``
    (never ``0 seconds``: two signals of one correlation often come within a second)."""
    if ms < 1000:
        return "less than a second"
    s = ms // 1000
    if s < 90:
        n, unit = s, "second"
    elif s < 90 * 60:
        n, unit = round(s / 60), "minute"
    else:
        n, unit = round(s / 3600), "hour"
    return f"{n} {unit}{'' if n == 1 else 's'}"
