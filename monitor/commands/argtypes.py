"""``argparse`` types shared by the commands: a bad value is a usage error (exit 2, one
sentence naming the option), never a traceback or a silently odd value."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["days", "host", "port"]


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


def days(minimum: float) -> Callable[[str], float]:
    """A finite number of days, at least ``minimum``."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number of days") from None
        if not math.isfinite(number) or number < minimum:
            raise argparse.ArgumentTypeError(
                f"{value!r} days: give a number of days of at least {minimum:g}")
        return number

    parse.__name__ = "days"
    return parse
