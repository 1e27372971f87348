"""Loading and validating rule files: typed diagnostics naming file, rule and problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from config import DEFAULT_RULES_DIR
from monitor.cli import main
from rules import Diagnostic, Engine, check_rules, load_rules
from signals import FULL_MONITORING
from signals.errors import RuleError, SessionguardError

from .conftest import fed, sig

GOOD_RULE = """
  - id: {id}
    title: A test rule
    description: Detects a screenshot key; tune the list.
    signals: [client.key]
    when: '{when}'
    severity: notice
    message: Key $combo.
    suggested_response: [Ask calmly.]
"""


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def errors(diags: list[Diagnostic]) -> list[Diagnostic]:
    return [d for d in diags if d.level == "error"]


def test_default_rules_are_clean() -> None:
    assert check_rules([DEFAULT_RULES_DIR]) == []
    ruleset = load_rules()
    assert len(ruleset.rules) >= 20
    # indexed by signal: a heartbeat runs only the rules that listen to heartbeats
    assert {r.id for r in ruleset.by_signal["client.heartbeat"]} == {"sdk-silent"}
    assert ruleset.get("screenshot-key") is not None


@pytest.mark.parametrize(
    ("text", "rule", "needle"),
    [
        ("rules: [\n  - id: x\n    title: [unclosed\n", None, "not valid YAML (line"),
        ("rules:" + GOOD_RULE.format(id="k1", when='combo == "x"') + "    colour: red\n",
         "k1", "unknown key 'colour'"),
        ("rules:" + GOOD_RULE.format(id="k2", when='colour == "red"'), "k2",
         "unknown field 'colour'"),
        ("rules:" + GOOD_RULE.format(id="k3", when='combo ==').replace("client.key", "client.key"),
         "k3", "syntax error"),
        ("rules:" + GOOD_RULE.format(id="k4", when="true").replace("client.key", "client.nope"),
         "k4", "unknown signal 'client.nope'"),
        ("rules:" + GOOD_RULE.format(id="k5", when="true") + "    hold: ten seconds\n", "k5",
         "bad duration 'ten seconds'"),
        ("rules:" + GOOD_RULE.format(id="k6", when="true") + "    count: {n: 2, within: 5x}\n",
         "k6", "bad duration '5x'"),
        ("rules:" + GOOD_RULE.format(id="k7", when="true").replace("notice", "loud"), "k7",
         "severity"),
        ("rules:" + GOOD_RULE.format(id="k8", when="true") * 2, "k8", "duplicate rule id"),
        ("rules:" + GOOD_RULE.format(id="k9", when="true") + "    hold: 5s\n    absent: 5s\n",
         "k9", "choose one correlation"),
        ("rules:" + GOOD_RULE.format(id="k10", when="true")
         + "    distinct: {field: nope, n: 2, within: 1m}\n", "k10", "unknown field 'nope'"),
        ("colour: red\n", None, "unknown key 'colour'"),
        ("rules:" + GOOD_RULE.format(id="k13", when='combo == 5'), "k13",
         "when: the string field 'combo' is compared with a float, which is never true"),
        ("rules:" + GOOD_RULE.format(id="k14", when='combo == "x" or signal != 1'), "k14",
         "when: the string field 'signal' is compared with a float, which is always true"),
        ("rules:" + GOOD_RULE.format(id="k15", when='combo in [1, 2]'), "k15",
         "when: the string field 'combo' is looked up in a list of floats, which is never true"),
        ("rules:" + GOOD_RULE.format(id="k11", when="true") + "    cooldown: .inf\n", "k11",
         "cooldown: bad duration inf: not a finite number"),
        ("rules:" + GOOD_RULE.format(id="k12", when="true") + "    hold: .nan\n", "k12",
         "hold: bad duration nan: not a finite number"),
        # YAML booleans are not one second
        ("rules:" + GOOD_RULE.format(id="b1", when="true") + "    hold: true\n", "b1",
         "hold: bad duration True"),
        ("rules:" + GOOD_RULE.format(id="b2", when="true") + "    cooldown: yes\n", "b2",
         "cooldown: bad duration True"),
        ("rules:" + GOOD_RULE.format(id="b3", when="true") + "    count: {n: 2, within: on}\n",
         "b3", "count.within: bad duration True"),
        # requires may add consent scopes, never drop the signals' own
        ("rules:" + GOOD_RULE.format(id="r1", when="true") + "    requires: []\n", "r1",
         "requires: [] leaves out the consent scopes of the rule's signals (device)"),
        ("rules:" + GOOD_RULE.format(id="r2", when="true") + "    requires: [audio]\n", "r2",
         "leaves out the consent scopes"),
        ("rules:" + GOOD_RULE.format(id="d1", when="true")
         + "    distinct: {field: participant, n: 2, within: 1m}\n", "d1",
         "it needs group_by: session"),
        ("rules:" + GOOD_RULE.format(id="f1", when="true") + "    fingerprint: [count]\n", "f1",
         "fingerprint: unknown field 'count'"),
        ("rules:" + GOOD_RULE.format(id="Bad_Id", when="true"), "Bad_Id",
         "id: an id is lower-case"),
        ("- a\n- b\n", None, "a rule file is a mapping with the keys lists, macros and rules"),
        ("lists:\n  true: [a]\n", None, "lists: a name is not a string"),
        ("lists:\n  in: [a]\n", None, "bad list name 'in'"),
        ("macros:\n  not: combo == 'x'\n", None, "bad macro name 'not'"),
        ("rules: " + "[" * 5000 + "]" * 5000 + "\n", None, "not valid YAML (nested too deeply"),
    ],
)
def test_broken_files_name_file_rule_and_problem(tmp_path: Path, text: str, rule: str | None,
                                                needle: str) -> None:
    path = write(tmp_path, text)
    diags = errors(check_rules([path]))
    assert diags, "expected an error"
    assert any(needle in d.message for d in diags), diags
    assert not any("Value error" in d.message for d in diags), diags
    assert all(d.file == str(path) for d in diags)
    if rule is not None:
        assert any(d.rule == rule for d in diags)
    with pytest.raises(RuleError) as info:
        load_rules([path])
    assert isinstance(info.value, SessionguardError)
    assert info.value.diagnostics and str(path) in str(info.value)


def test_warnings_for_missing_description_response_and_placeholder(tmp_path: Path) -> None:
    path = write(tmp_path, """
        rules:
          - id: bare
            title: Bare
            signals: [client.key]
            severity: info
            message: Key ${nothing}.
    """)
    diags = check_rules([path])
    assert errors(diags) == []
    text = " | ".join(d.message for d in diags)
    assert "no description" in text and "no suggested_response" in text
    assert "unknown placeholder ${nothing}" in text
    ruleset = load_rules([path])  # warnings do not stop loading
    assert [r.id for r in ruleset.rules] == ["bare"] and len(ruleset.warnings) == 3


def test_a_placeholder_only_some_ending_signals_have_is_flagged(tmp_path: Path) -> None:
    """The message is filled from the signal that ends the rule, then from the rest of its
    evidence: a field of only one of a rule's signals would be shown as a literal $name
    when another one ends it. A sequence's (or all_of's) steps are all in its evidence, so
    an earlier step's field is filled (the engine test checks the words)."""
    path = write(tmp_path, """
        rules:
          - id: seq
            title: t
            description: d
            signals: [client.display_capture, client.media_recorder]
            sequence:
              within: 1m
              steps:
                - {signal: client.display_capture}
                - {signal: client.media_recorder}
            severity: warning
            message: Captured via $api, then recorded.
            suggested_response: [x]
          - id: either
            title: t
            description: d
            signals: [client.pip, client.display_capture]
            severity: info
            message: Changed ($active).
            suggested_response: [x]
          - id: fine
            title: t
            description: d
            signals: [client.pip, client.fullscreen]
            severity: info
            message: Changed ($active).
            suggested_response: [x]
    """)
    diags = check_rules([path])
    assert errors(diags) == []
    by_rule = {d.rule: d.message for d in diags}
    assert "${active} is not a field of every signal that can end this rule " \
        "(client.display_capture has none)" in by_rule["either"]
    assert "seq" not in by_rule and "fine" not in by_rule
    engine = Engine(load_rules([path]), default_consent=FULL_MONITORING)
    fed(engine, sig("client.display_capture", 0, {"api": "getDisplayMedia"}))
    (alert,) = fed(engine, sig("client.media_recorder", 5))
    assert alert.message == "Captured via getDisplayMedia, then recorded."


def test_lists_and_macros_across_files_in_order(tmp_path: Path) -> None:
    write(tmp_path, """
        lists:
          shots: [PrintScreen]
        macros:
          is_shot: combo in shots
    """, "00-lists.yaml")
    write(tmp_path, "rules:" + GOOD_RULE.format(id="uses-macro", when="is_shot"), "10-r.yaml")
    ruleset = load_rules([tmp_path])
    rule = ruleset.rules[0]
    assert rule.when is not None and "PrintScreen" in rule.when.text
    # string literals are never expanded
    write(tmp_path, "rules:" + GOOD_RULE.format(id="literal", when="combo == \"is_shot\""),
          "20-r.yaml")
    lit = load_rules([tmp_path]).get("literal")
    assert lit is not None and lit.when is not None and lit.when.text == 'combo == "is_shot"'


def test_when_is_not_python(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:" + GOOD_RULE.format(
        id="evil", when='__import__("os").system("true")'))
    assert errors(check_rules([path]))


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    diags = check_rules([tmp_path / "nope.yaml"])
    assert diags[0].level == "error" and "no such file" in diags[0].message


def test_rules_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check"]) == 0
    assert "ok:" in capsys.readouterr().out
    bad = write(tmp_path, "rules:" + GOOD_RULE.format(id="bad-one", when='colour == "x"'))
    assert main(["rules", "check", str(bad)]) == 1
    captured = capsys.readouterr()  # problems are errors: on stderr, like every command's
    assert f"{bad}: rule bad-one: error: when: unknown field 'colour'" in captured.err
    assert "1 error(s), 0 warning(s)" in captured.err and captured.out == ""
    with pytest.raises(SystemExit) as info:
        main(["rules", "nonsense"])
    assert info.value.code == 2


def test_one_run_reports_every_problem_of_a_rule(tmp_path: Path) -> None:
    path = write(tmp_path, """
        rules:
          - id: many
            title: Many
            description: d
            signals: [client.key]
            when: colour == "red"
            hold: soon
            severity: warning
            message: m $nope
            suggested_response: [x]
            frequency: 3
    """)
    found = [(d.level, d.message.split(":")[0]) for d in check_rules([path])]
    assert ("error", "unknown key 'frequency'") in found
    assert ("error", "when") in found and ("error", "hold") in found
    assert ("warning", "message") in found


def test_a_boolean_compared_with_a_string_is_an_error(tmp_path: Path) -> None:
    text = ("rules:" + GOOD_RULE.format(id="focus", when='focused == "false"')
            .replace("client.key", "client.focus").replace("Key $combo.", "Focus."))
    [diag] = errors(check_rules([write(tmp_path, text)]))
    assert diag.rule == "focus" and "the boolean field 'focused' is compared with a string" \
        in diag.message
    fixed = text.replace('focused == "false"', "focused == false")
    assert errors(check_rules([write(tmp_path, fixed)])) == []


def test_a_macro_cycle_is_named_not_an_unknown_field(tmp_path: Path) -> None:
    text = ("macros:\n  a: b or combo == \"x\"\n  b: a\n"
            "rules:" + GOOD_RULE.format(id="cyc", when="a"))
    [diag] = errors(check_rules([write(tmp_path, text)]))
    assert diag.rule == "cyc" and "macro 'a' never stops expanding" in diag.message
    nested = "macros:\n  a: b\n  b: combo == \"x\"\nrules:" + GOOD_RULE.format(id="ok", when="a")
    assert errors(check_rules([write(tmp_path, nested)])) == []
