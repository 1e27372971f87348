"""Rule tests in the style of ``promtool test rules``: signals at relative times, a consent
policy, and the alerts expected at given times (an empty list means "none").

A fixture file (YAML) holds ``tests``; each test::

    name: a screenshot key raises a notice
    rule: screenshot-key            # the rule under test (for coverage)
    consent: {monitoring: [device, audio, video], recording: prohibited}   # the default
    input:
      - {at: 0s, signal: client.key, data: {combo: PrintScreen}}
      - {at: 10s, consent: {recording: patient_allowed}}    # a consent change at its time
    until: 3m                      # tick every second up to this time (default: last input)
    tick: true                     # false: no ticks, holds fire only from the next signal
    only: [screenshot-key]         # compare only these rules' alerts (default: all alerts)
    expect:
      - {at: 0s, rule: screenshot-key, severity: notice}

An expectation may also check the words the clinician reads: ``message_contains`` and
``message_lacks`` (a fragment of the message), ``response_contains`` and ``response_lacks`` (a
fragment of any suggested response; ``response_lacks``: of none of them).

A media signal's confidence (``signal_confidence`` in conditions, and the alert's) is its
``data.confidence``, as the live sidecar and ``replay`` give it.

Times (``at``, ``until``) are durations from the start, at most :data:`MAX_FIXTURE_MS` (a week:
the engine is ticked every simulated second). Every rule id named (``rule``, ``only``,
``expect``) must be one of the rules under test.

Pure: :func:`run_case` takes the parsed mapping and returns the differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rules.durations import parse_duration_ms
from rules.engine import REPLAY_DEFAULT_CONSENT, Engine
from rules.model import Alert
from rules.replay import media_confidence
from rules.ruleset import Ruleset
from signals.catalog import make_signal
from signals.consent import Consent
from signals.errors import ConfigError

__all__ = ["MAX_FIXTURE_MS", "CaseResult", "FixtureCase", "run_case"]

BASE_AT = 1_700_000_000_000
#: the latest simulated time a fixture may name (a week: 604,800 ticks take about a second)
MAX_FIXTURE_MS = 7 * 24 * 3_600_000

# ``bool`` first: kept as a bool (not read as 1 second), so ``_time`` refuses YAML's ``true``
Time = bool | str | int | float


def _time(value: Time) -> Time:
    """A fixture time: a duration (ValueError naming the problem), at most a week."""
    ms = parse_duration_ms(value)
    if ms > MAX_FIXTURE_MS:
        raise ValueError(f"{value!r} is later than a fixture may run (at most 168h, a week)")
    return value


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Time
    signal: str | None = None
    data: dict[str, Any] = {}
    participant: str = "patient"
    session: str = "fixture"
    consent: dict[str, Any] | None = None

    _at_ok = field_validator("at")(_time)

    @model_validator(mode="after")
    def _does_something(self) -> _Input:
        if self.signal is None and self.consent is None:
            raise ValueError("an input needs a signal or a consent change")
        return self


class _Expect(BaseModel):
    model_config = ConfigDict(extra="forbid")
    at: Time
    rule: str
    severity: str | None = None
    participant: str | None = None
    message_contains: str | None = None
    message_lacks: str | None = None
    response_contains: str | None = None
    response_lacks: str | None = None

    _at_ok = field_validator("at")(_time)


class FixtureCase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    rule: str
    consent: dict[str, Any] | None = None
    input: list[_Input] = Field(min_length=1)
    until: Time | None = None
    only: list[str] | None = None
    tick: bool = True
    expect: list[_Expect]

    @field_validator("until")
    @classmethod
    def _until_ok(cls, value: Time | None) -> Time | None:
        return None if value is None else _time(value)

    def unknown_rules(self, ruleset: Ruleset) -> list[str]:
        """The rule ids this case names that ``ruleset`` does not have."""
        named = [self.rule, *(self.only or []), *(e.rule for e in self.expect)]
        return sorted({r for r in named if ruleset.get(r) is None})


@dataclass(frozen=True)
class CaseResult:
    name: str
    alerts: tuple[Alert, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def run_case(case: FixtureCase, ruleset: Ruleset) -> CaseResult:
    """Run one case; a :class:`ConfigError` when it names a rule ``ruleset`` lacks (a typo
    in ``only`` would otherwise compare nothing and pass)."""
    unknown = case.unknown_rules(ruleset)
    if unknown:
        raise ConfigError(f"unknown rule {', '.join(map(repr, unknown))} "
                          "(not among the rules under test)")
    base = Consent.parse(case.consent) if case.consent is not None else REPLAY_DEFAULT_CONSENT
    engine = Engine(ruleset, default_consent=base)
    alerts: list[Alert] = []
    current: dict[str, Consent] = {}
    last = 0
    for item in sorted(case.input, key=lambda i: parse_duration_ms(i.at)):
        rel = parse_duration_ms(item.at)
        at = BASE_AT + rel
        if case.tick:
            for t in range(last + 1000, rel, 1000):  # tick each second, like the server
                alerts += engine.tick(BASE_AT + t).alerts
            alerts += engine.tick(at).alerts
        last = rel
        if item.consent is not None:
            prev = current.get(item.session, base)
            c = Consent.parse({
                "monitoring": item.consent.get("monitoring", sorted(prev.monitoring)),
                "recording": item.consent.get("recording", prev.recording)})
            current[item.session] = c
            engine.set_consent(item.session, c, at)
        if item.signal is not None:
            # a media signal's confidence is its data.confidence, as live and in replay
            sig = make_signal(item.signal, at, item.data, session=item.session,
                              participant=item.participant,
                              confidence=media_confidence(item.signal, item.data))
            alerts += engine.feed(sig, at).alerts
    until = parse_duration_ms(case.until) if case.until is not None else last
    for t in range(last + 1000, until + 1, 1000):
        alerts += engine.tick(BASE_AT + t).alerts
    seen = [a for a in alerts if case.only is None or a.rule in case.only]
    got = sorted((a.at - BASE_AT, a.rule) for a in seen)
    want = sorted((parse_duration_ms(e.at), e.rule) for e in case.expect)
    problems: list[str] = []
    if got != want:
        problems.append(f"expected alerts {want}, got {got}")
    for e in case.expect:
        at = BASE_AT + parse_duration_ms(e.at)
        match = next((a for a in seen if a.at == at and a.rule == e.rule), None)
        if match is None:
            continue
        if e.severity is not None and match.severity.label != e.severity:
            problems.append(f"{e.rule} at {e.at}: severity {match.severity.label}, "
                            f"expected {e.severity}")
        if e.participant is not None and match.participant != e.participant:
            problems.append(f"{e.rule} at {e.at}: participant {match.participant}")
        problems += _wording_problems(e, match)
    return CaseResult(case.name, tuple(alerts), tuple(problems))


def _wording_problems(e: _Expect, alert: Alert) -> list[str]:
    """What the expectation's message and response fragments find wrong in ``alert``."""
    out: list[str] = []
    where = f"{e.rule} at {e.at}"
    if e.message_contains is not None and e.message_contains not in alert.message:
        out.append(f"{where}: message {alert.message!r} lacks {e.message_contains!r}")
    if e.message_lacks is not None and e.message_lacks in alert.message:
        out.append(f"{where}: message {alert.message!r} contains {e.message_lacks!r}")
    responses = alert.suggested_response
    if e.response_contains is not None and not any(e.response_contains in r for r in responses):
        out.append(f"{where}: no suggested response contains {e.response_contains!r} "
                   f"({list(responses)!r})")
    if e.response_lacks is not None and any(e.response_lacks in r for r in responses):
        out.append(f"{where}: a suggested response contains {e.response_lacks!r} "
                   f"({list(responses)!r})")
    return out
