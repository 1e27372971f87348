"""Every promtool-style fixture in tests/fixtures/rules passes against the default rules,
and every default rule has at least one firing and one silent fixture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli import main
from rules import Ruleset
from rules.fixtures import FixtureCase, run_case

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "rules"


def _cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(FIXTURES.glob("*.yaml")):
        for raw in yaml.safe_load(path.read_text())["tests"]:
            out.append((f"{path.stem}: {raw['name']}", raw))
    return out


CASES = _cases()


@pytest.mark.parametrize("raw", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_fixture(raw: dict[str, Any], default_rules: Ruleset) -> None:
    result = run_case(FixtureCase.model_validate(raw), default_rules)
    assert result.ok, result.problems


def test_every_default_rule_has_firing_and_silent_fixtures(default_rules: Ruleset) -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for _name, raw in CASES:
        fires = any(e["rule"] == raw["rule"] for e in raw["expect"])
        (firing if fires else silent).add(raw["rule"])
    ids = {r.id for r in default_rules.rules}
    assert ids - firing == set(), "rules without a firing fixture"
    assert ids - silent == set(), "rules without a silent fixture"


def test_a_wrong_expectation_fails(default_rules: Ruleset) -> None:
    case = FixtureCase.model_validate({
        "name": "wrong", "rule": "screenshot-key",
        "input": [{"at": "0s", "signal": "client.key", "data": {"combo": "PrintScreen"}}],
        "expect": [{"at": "1s", "rule": "screenshot-key"}],
    })
    result = run_case(case, default_rules)
    assert not result.ok
    assert "expected alerts" in result.problems[0]
    case = case.model_copy(update={"expect": []})
    assert not run_case(case, default_rules).ok  # "none" is checked too


def test_wrong_severity_is_reported(default_rules: Ruleset) -> None:
    case = FixtureCase.model_validate({
        "name": "sev", "rule": "screenshot-key",
        "input": [{"at": 0, "signal": "client.key", "data": {"combo": "PrintScreen"}}],
        "expect": [{"at": 0, "rule": "screenshot-key", "severity": "critical"}],
    })
    assert "severity notice" in run_case(case, default_rules).problems[0]


def test_rules_test_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["rules", "test", str(FIXTURES)]) == 0
    assert f"{len(CASES)}/{len(CASES)} rule tests passed" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tests": [{
        "name": "expects nothing", "rule": "os-screenshot",
        "input": [{"at": "0s", "signal": "os.screenshot", "data": {"api": "x"}}],
        "expect": []}]}))
    assert main(["rules", "test", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "expects nothing" in out and "0/1 rule tests passed" in out


GOOD_CASE: dict[str, Any] = {
    "name": "a screenshot key", "rule": "screenshot-key",
    "input": [{"at": "0s", "signal": "client.key", "data": {"combo": "PrintScreen"}}],
    "expect": [{"at": "0s", "rule": "screenshot-key"}]}


@pytest.mark.parametrize(("change", "needle"), [
    ({"rule": "screenshot-kye"}, "unknown rule 'screenshot-kye'"),
    ({"only": ["screenshot-key", "nope"]}, "unknown rule 'nope'"),
    ({"expect": [{"at": "0s", "rule": "nope"}]}, "unknown rule 'nope'"),
    ({"until": "100000h"}, "until: '100000h' is later than a fixture may run"),
    ({"until": float("inf")}, "until: bad duration inf: not a finite number"),
    ({"input": [{"at": "100000h", "signal": "client.key", "data": {"combo": "PrintScreen"}}]},
     "input.0.at: '100000h' is later than a fixture may run"),
    ({"inputs": [], "input": None}, "input: Input should be a valid list; inputs: Extra inputs"),
    ({"input": [{"at": True, "signal": "client.key", "data": {"combo": "PrintScreen"}}]},
     "input.0.at: bad duration True"),  # YAML's true is not one second
    ({"input": [{"at": "0s"}]}, "input.0: an input needs a signal or a consent change"),
])
def test_an_invalid_fixture_says_which_key_and_why(tmp_path: Path, change: dict[str, Any],
                                                   needle: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"tests": [{**GOOD_CASE, **change}]}))
    assert main(["rules", "test", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: test 1: invalid fixture: {needle}" in out and "0/1 rule tests" in out


def test_no_tests_is_an_error_and_yml_fixtures_count(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("tests: []\n")
    assert main(["rules", "test", str(empty)]) == 1
    assert "the 'tests' list is empty" in capsys.readouterr().err
    folder = tmp_path / "yml"
    folder.mkdir()
    assert main(["rules", "test", str(folder)]) == 1
    assert "no fixture files (*.yaml, *.yml)" in capsys.readouterr().err
    (folder / "one.yml").write_text(yaml.safe_dump({"tests": [GOOD_CASE]}))
    assert main(["rules", "test", str(folder)]) == 0
    assert "1/1 rule tests passed" in capsys.readouterr().out


@pytest.mark.parametrize(("check", "needle"), [
    ({"message_lacks": "Meta+Shift+4"}, "contains 'Meta+Shift+4'"),
    ({"response_contains": "no such advice"}, "no suggested response contains 'no such advice'"),
    ({"response_lacks": "recording agreement"}, "a suggested response contains 'recording agree"),
])
def test_wording_checks_report_what_the_clinician_would_read(
        default_rules: Ruleset, check: dict[str, str], needle: str) -> None:
    case = FixtureCase.model_validate({
        "name": "words", "rule": "screenshot-key",
        "input": [{"at": "0s", "signal": "client.key", "data": {"combo": "Meta+Shift+4"}}],
        "expect": [{"at": "0s", "rule": "screenshot-key", **check}]})
    problems = run_case(case, default_rules).problems
    assert len(problems) == 1 and needle in problems[0], problems
    fine = {"message_lacks": "PrintScreen", "response_contains": "recording agreement",
            "response_lacks": "is anything recording"}
    case = case.model_copy(update={"expect": [
        case.expect[0].model_copy(update=fine)]})
    assert run_case(case, default_rules).ok
