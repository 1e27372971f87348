"""``sessionguard replay``: wire messages in, alert JSON lines out, deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.cli import main
from rules import Ruleset
from rules.replay import ReplayError, replay
from tests.rules.conftest import T0

LINES = [
    {"type": "signal", "signal": "client.heartbeat", "at": T0, "data": {}},
    {"type": "signal", "signal": "client.devices", "at": T0 + 1000, "data": {
        "change": "initial",
        "devices": [{"kind": "audioinput", "label": "BlackHole 2ch", "id": "x"}]}},
    {"type": "signal", "signal": "client.key", "at": T0 + 2000, "data": {"combo": "PrintScreen"},
     "session": "other", "participant": "p2"},
    {"type": "consent.set", "recording": "patient_allowed", "at": T0 + 3000},
    {"type": "signals", "items": [
        {"signal": "os.screenshot", "at": T0 + 4000, "data": {"api": "x"}},
        {"signal": "client.visibility", "at": T0 + 5000, "data": {"state": "hidden"}}]},
    {"type": "tick", "at": T0 + 200_000},
]


def write(tmp_path: Path, lines: list[object]) -> Path:
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return p


def test_replay_alerts_consent_and_per_session_seq(default_rules: Ruleset) -> None:
    out = list(replay((json.dumps(x) for x in LINES), default_rules))
    got = [(m["session"], m["seq"], m["rule"], m["severity"]) for m in out]
    assert got == [
        ("replay", 1, "loopback-audio-device", "notice"),
        ("other", 1, "screenshot-key", "notice"),
        ("replay", 2, "os-screenshot", "info"),       # after consent.set patient_allowed
        ("replay", 3, "sdk-silent", "notice"),        # no heartbeat after the first
        ("replay", 4, "page-hidden-long", "info"),    # the hold, fired by the tick line
    ]
    assert out[1]["participant"] == "p2" and out[0]["type"] == "alert"


def test_replay_with_restricted_consent(default_rules: Ruleset) -> None:
    from signals import Consent
    out = list(replay((json.dumps(x) for x in LINES), default_rules,
                      Consent(frozenset({"audio"}), "prohibited")))
    assert out == []


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"type": "bogus"}', "unknown message type 'bogus'"),
        ('{"type": "signal", "signal": "client.key", "at": 5, "data": {}}', "data.combo"),
        ('{"type": "signal", "signal": "client.nope", "at": 5}', "unknown signal"),
        ('{"type": "signal", "signal": "client.heartbeat", "at": "soon"}', "'at'"),
        ('{"type": "signal", "signal": "client.heartbeat", "at": 1e400}', "finite number"),
        ('{"type": "signal", "signal": "client.heartbeat", "at": NaN}', "finite number"),
        ('{"type": "tick", "at": -Infinity}', "finite number"),
        ('{"type": "consent.set", "recording": "sometimes", "at": 5}', "recording"),
        ('{"type": "signal", "signal": "client.key", "at": 5, "data": [1]}',
         "client.key: data must be a JSON object, not list"),
        ('{"type": "signal", "signal": "client.heartbeat", "at": 5, "session": null}',
         "'session' must be a non-empty string"),
        ('{"type": "signal", "signal": "client.heartbeat", "at": 5, "participant": {"a": 1}}',
         "'participant' must be a non-empty string"),
    ],
)
def test_malformed_line_names_its_number(default_rules: Ruleset, line: str, needle: str) -> None:
    lines = [json.dumps(LINES[0]), "", "# a comment", line]
    with pytest.raises(ReplayError) as info:
        list(replay(lines, default_rules))
    assert info.value.line == 4 and str(info.value).startswith("line 4: ")
    assert needle in str(info.value)


def test_replay_command_is_deterministic(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, LINES)
    assert main(["replay", str(path)]) == 0
    first = capsys.readouterr().out
    assert main(["replay", str(path)]) == 0
    assert capsys.readouterr().out == first
    msgs = [json.loads(x) for x in first.splitlines()]
    assert [m["seq"] for m in msgs if m["session"] == "replay"] == [1, 2, 3, 4]
    assert main(["replay", str(path), "--consent", '{"monitoring": ["device"], '
                 '"recording": "provider_records"}']) == 0
    lines = capsys.readouterr().out.splitlines()
    sev = {json.loads(x)["rule"]: json.loads(x)["severity"] for x in lines}
    assert sev["loopback-audio-device"] == "info"


def test_replay_command_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(LINES[0]) + "\n{oops\n")
    # the real console entry point, once: one sentence on stderr, no traceback, exit 1
    r = subprocess.run([sys.executable, "-m", "monitor.cli", "replay", str(bad)],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1 and r.stderr.strip().startswith("sessionguard replay: line 2: ")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert main(["replay", str(tmp_path / "missing.jsonl")]) == 1
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "Traceback" not in err
    assert main(["replay", str(bad), "--consent", "{nope"]) == 1
    assert "consent" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["replay"])
    assert info.value.code == 2


def test_replay_input_that_is_not_utf8_names_the_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(LINES[0]).encode() + b"\n# caf\xe9\n")
    assert main(["replay", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path} is not UTF-8 text" in err and "on line 2" in err


def test_replay_counts_a_resent_seq_once_and_keeps_a_media_signals_confidence(
        default_rules: Ruleset) -> None:
    """As the live channel does: a resend (the same participant's seq again) is not counted
    twice, and a media signal's evidence confidence is the detector's (``data.confidence``)."""
    key = {"type": "signal", "signal": "client.key", "seq": 1, "data": {"combo": "PrintScreen"}}
    lines = [json.dumps({**key, "at": T0 + i}) for i in range(3)]
    lines.append(json.dumps({**key, "at": T0 + 5, "participant": "other"}))  # not a resend
    out = list(replay(lines, default_rules))
    assert [(m["rule"], m["participant"]) for m in out] == [
        ("screenshot-key", "patient"), ("screenshot-key", "other")]
    shutter = {"type": "signal", "signal": "audio.shutter", "at": T0,
               "data": {"confidence": 0.3}}
    (alert,) = replay([json.dumps(shutter)], default_rules)
    assert alert["confidence"] == pytest.approx(0.6 * 0.3)
