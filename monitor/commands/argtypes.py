"""``argparse`` types shared by the commands: a bad value is a usage error (exit 2, one
sentence naming the option), never a traceback or a silently odd value."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["MAX_DAYS", "days", "host", "port"]


def port(value: str) -> int:
    """A TCP port, 0 (any free port) to 65535."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{number} is not a port (0-65535; 0: any free port)")
    return number


def host(value: str) -> str:
    """An address to listen on; never empty (that would listen on every interface)."""
    from monitor.config import host_problem

    problem = host_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"the host {problem}")
    return value


#: more days than any audit store has existed (and small enough for SQLite's integers)
MAX_DAYS = 1_000_000


def days(minimum: float, *, above: bool = False) -> Callable[[str], float]:
    """A finite number of days, at least ``minimum`` (more than it when ``above``), at most
    :data:`MAX_DAYS`."""
    least = f"more than {minimum:g}" if above else f"at least {minimum:g}"

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of days") from None
        low_ok = number > minimum if above else number >= minimum
        if not math.isfinite(number) or not low_ok or number > MAX_DAYS:
            raise argparse.ArgumentTypeError(
                f"{value!r}: give a number of days, {least} and at most {MAX_DAYS:,}")
        return number

    parse.__name__ = "days"
    return parse
