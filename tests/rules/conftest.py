"""Shared helpers for the rules tests: the default ruleset (loaded once) and a signal maker."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from rules import Alert, Engine, Ruleset, load_rules
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


def rules_from(tmp_path: Path, text: str) -> Ruleset:
    """The rules of one YAML text (dedented), written to ``tmp_path``."""
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    return load_rules([p])


def fed(engine: Engine, *signals: Signal) -> list[Alert]:
    """Every alert of ``signals`` fed in order, each at its own time."""
    out: list[Alert] = []
    for s in signals:
        out += engine.feed(s, s.at).alerts
    return out
