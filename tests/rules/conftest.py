"""Shared helpers for the rules tests: the default ruleset (loaded once) and a signal maker."""

from __future__ import annotations

from typing import Any

import pytest

from rules import Engine, Ruleset, load_rules
from signals import FULL_MONITORING, Signal, make_signal

T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def default_rules() -> Ruleset:
    return load_rules()


@pytest.fixture
def engine(default_rules: Ruleset) -> Engine:
    return Engine(default_rules, default_consent=FULL_MONITORING)


def sig(name: str, at_s: float, data: dict[str, Any] | None = None, *, session: str = "s1",
        participant: str = "patient") -> Signal:
    return make_signal(name, T0 + int(at_s * 1000), data or {}, session=session,
                       participant=participant)
