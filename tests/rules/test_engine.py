"""The engine's behaviour: consent gates, correlation, holds, dedup, caps, inhibition,
templates, determinism, and its state size."""

from __future__ import annotations

import random
import tracemalloc
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from rules import Engine, Outcome, Ruleset, Severity
from signals import FULL_MONITORING, NO_CONSENT, Consent
from tests.rules.conftest import T0, fed, rules_from, sig

DEVICE_ONLY = Consent(frozenset({"device"}), "prohibited")


def test_outcome_and_wire_shape(engine: Engine) -> None:
    out = engine.feed(sig("client.display_capture", 0, {"api": "getDisplayMedia"}), T0)
    (alert,) = out.alerts
    wire = alert.to_wire(7)
    assert wire["type"] == "alert" and wire["seq"] == 7 and wire["severity"] == "warning"
    assert wire["rule"] == "page-display-capture" and wire["session"] == "s1"
    assert wire["evidence"] == [{"signal": "client.display_capture", "at": T0,
                                 "data": {"api": "getDisplayMedia"}}]
    assert wire["suggested_response"] and 0 < wire["confidence"] <= 1
    assert set(wire) >= {"id", "participant", "title", "message", "at"}


def test_severity_order() -> None:
    assert Severity.INFO < Severity.NOTICE < Severity.WARNING < Severity.CRITICAL
    assert Severity.parse("warning") is Severity.WARNING and str(Severity.CRITICAL) == "critical"


def test_default_consent_is_private_and_skips_are_reported_once(default_rules: Ruleset) -> None:
    engine = Engine(default_rules)  # NO_CONSENT by default
    first = engine.feed(sig("client.key", 0, {"combo": "PrintScreen"}), T0)
    assert first.alerts == () and {s.rule for s in first.skipped} >= {"screenshot-key"}
    missing = {s.rule: s.missing for s in first.skipped}
    assert missing["screenshot-key"] == ("device",)
    assert missing["screenshot-heard"] == ("audio", "device")  # a rule needing two scopes
    again = engine.feed(sig("client.key", 1, {"combo": "PrintScreen"}), T0)
    assert again.skipped == ()
    engine.set_consent("s1", DEVICE_ONLY, T0 + 2000)
    granted = engine.feed(sig("client.key", 3, {"combo": "PrintScreen"}), T0)
    assert [a.rule for a in granted.alerts] == ["screenshot-key"]
    assert [s.rule for s in granted.skipped] == ["screenshot-heard"]  # reported afresh
    audio = engine.feed(sig("audio.shutter", 4), T0)
    assert audio.alerts == () and {s.missing for s in audio.skipped} == {("audio",)}


def test_the_first_consent_holds_for_signals_stamped_a_little_before_it(
        default_rules: Ruleset) -> None:
    """A patient's clock 3 s behind the sidecar's: the signals sent just after the token's
    consent was applied carry an earlier time; they were skipped for lack of consent."""
    engine = Engine(default_rules)  # NO_CONSENT by default
    engine.set_consent("s1", DEVICE_ONLY, T0 + 3_000)
    out = engine.feed(sig("client.key", 1, {"combo": "PrintScreen"}), T0 + 3_000)
    assert [a.rule for a in out.alerts] == ["screenshot-key"]
    assert {s.rule for s in out.skipped} == {"screenshot-heard"}  # needs audio: still skipped
    # a later change still takes effect at its own time
    engine.set_consent("s1", Consent(frozenset(), "prohibited"), T0 + 60_000)
    later = engine.feed(sig("client.key", 70, {"combo": "PrintScreen"}), T0 + 70_000)
    assert later.alerts == () and ("screenshot-key", ("device",)) in {
        (k.rule, k.missing) for k in later.skipped}


def test_devices_are_not_classified_without_device_consent(default_rules: Ruleset) -> None:
    engine = Engine(default_rules, default_consent=NO_CONSENT)
    data = {"change": "initial", "devices": [{"kind": "audioinput", "label": "BlackHole 2ch",
                                              "id": "x"}]}
    assert engine.feed(sig("client.devices", 0, data), T0).derived == ()
    engine.set_consent("s1", DEVICE_ONLY, T0)
    out = engine.feed(sig("client.devices", 1, data), T0)
    assert [d.data["match"] for d in out.derived] == ["BlackHole"]
    assert out.derived[0].source == "sidecar" and out.derived[0].session == "s1"
    assert [a.rule for a in out.alerts] == ["loopback-audio-device"]


def test_consent_change_takes_effect_at_its_own_time(default_rules: Ruleset) -> None:
    engine = Engine(default_rules, default_consent=FULL_MONITORING)
    engine.set_consent("s1", Consent(frozenset({"device"}), "patient_allowed"), T0 + 10_000)
    # a signal stamped before the change still sees the old policy
    (before,) = fed(engine, sig("os.screenshot", 5, {"api": "x"}))
    (after,) = fed(engine, sig("os.screenshot", 100, {"api": "x"}))
    assert before.severity is Severity.NOTICE
    assert after.severity is Severity.INFO and "permitted" in after.message


def test_recording_policy_caps_capture_rules_only(default_rules: Ruleset) -> None:
    engine = Engine(default_rules, default_consent=Consent(FULL_MONITORING.monitoring,
                                                           "provider_records"))
    alerts = fed(engine, sig("client.display_capture", 0, {"api": "getDisplayMedia"}),
                 sig("video.extra_person", 1))
    by_rule = {a.rule: a.severity for a in alerts}
    assert by_rule == {"page-display-capture": Severity.INFO, "extra-person": Severity.NOTICE}


def test_hold_fires_from_tick_or_next_event_and_clears(engine: Engine) -> None:
    assert fed(engine, sig("client.visibility", 0, {"state": "hidden"})) == []
    assert engine.tick(T0 + 119_000).alerts == ()
    (a,) = engine.tick(T0 + 121_000).alerts
    assert a.rule == "page-hidden-long" and a.at == T0 + 120_000 and "2 minutes" in a.message
    assert engine.tick(T0 + 500_000).alerts == ()  # fires once per episode
    # a second session: the next event fires it before the tick does
    other = [sig("client.visibility", 0, {"state": "hidden"}, session="s2"),
             sig("client.visibility", 600, {"state": "visible"}, session="s2")]
    (b,) = fed(engine, *other)
    assert b.session == "s2" and b.at == T0 + 120_000
    # a visible signal in time clears the hold
    fed(engine, sig("client.visibility", 0, {"state": "hidden"}, session="s3"),
        sig("client.visibility", 60, {"state": "visible"}, session="s3"))
    assert [x.session for x in engine.tick(T0 + 1_000_000).alerts] == []


def test_absence_fires_after_silence_and_end_session_forgets(engine: Engine) -> None:
    fed(engine, sig("client.heartbeat", 0), sig("client.heartbeat", 15))
    assert engine.tick(T0 + 59_000).alerts == ()
    (a,) = engine.tick(T0 + 61_000).alerts
    assert a.rule == "sdk-silent" and a.at == T0 + 60_000
    fed(engine, sig("client.heartbeat", 100))
    engine.end_session("s1")
    assert engine.tick(T0 + 1_000_000).alerts == () and engine.sessions == 0


CORRELATION_RULES = """
rules:
  - id: seq
    title: seq
    description: d
    signals: [client.focus, client.key]
    sequence:
      within: 10s
      steps:
        - {signal: client.focus, when: not focused}
        - {signal: client.key, when: combo == "A"}
        - {signal: client.key, when: combo == "B"}
    severity: notice
    message: seq $count in $duration
    suggested_response: [x]
    cooldown: 0s
  - id: distinct-keys
    title: d
    description: d
    signals: [client.key]
    distinct: {field: combo, n: 3, within: 1m}
    severity: info
    message: keys $distinct
    suggested_response: [x]
    cooldown: 0s
  - id: session-wide
    title: s
    description: d
    signals: [client.pip]
    group_by: session
    distinct: {field: participant, n: 2, within: 1m}
    severity: warning
    message: two people $distinct
    suggested_response: [x]
"""


def test_sequence_distinct_and_session_grouping(tmp_path: Path) -> None:
    engine = Engine(rules_from(tmp_path, CORRELATION_RULES), default_consent=FULL_MONITORING)
    out = fed(engine, sig("client.key", 0, {"combo": "A"}),
              sig("client.focus", 1, {"focused": False}),
              sig("client.key", 2, {"combo": "A"}), sig("client.key", 3, {"combo": "B"}))
    seqs = [a for a in out if a.rule == "seq"]
    assert len(seqs) == 1 and seqs[0].message == "seq 3 in 2 seconds"
    assert [e.at for e in seqs[0].evidence] == [T0 + 1000, T0 + 2000, T0 + 3000]
    assert [a.message for a in out if a.rule == "distinct-keys"] == []
    (d,) = fed(engine, sig("client.key", 4, {"combo": "C"}))
    assert d.rule == "distinct-keys" and d.message == "keys A, B, C"
    # out of the window: a chain that starts too early does not complete
    late = fed(engine, sig("client.focus", 100, {"focused": False}),
               sig("client.key", 105, {"combo": "A"}), sig("client.key", 111, {"combo": "B"}))
    assert [a.rule for a in late] == []
    # participants are separate groups unless the rule groups by session
    p1 = fed(engine, sig("client.pip", 200, {"active": True}, participant="p1"))
    p2 = fed(engine, sig("client.pip", 201, {"active": True}, participant="p2"))
    assert p1 == [] and [a.message for a in p2] == ["two people p1, p2"]


def test_dedup_cooldown_and_caps(tmp_path: Path) -> None:
    ruleset = rules_from(tmp_path, """
        rules:
          - id: k
            title: k
            description: d
            signals: [client.key]
            severity: info
            message: $combo
            suggested_response: [x]
            fingerprint: [combo]
            cooldown: 10s
            max_per_session: 3
    """)
    engine = Engine(ruleset, default_consent=FULL_MONITORING)
    out = [engine.feed(sig("client.key", t, {"combo": c}), T0) for t, c in
           [(0, "A"), (1, "A"), (2, "B"), (11, "A"), (30, "C")]]
    assert [a.message for o in out for a in o.alerts] == ["A", "B", "A"]
    assert out[1].suppressed == 1 and out[4].suppressed == 1  # cooldown, then the rule cap
    capped = Engine(ruleset, default_consent=FULL_MONITORING, max_alerts_per_session=1)
    fed(capped, sig("client.key", 0, {"combo": "A"}))
    held = capped.feed(sig("client.key", 1, {"combo": "B"}), T0)
    assert held.alerts == () and held.suppressed == 1
    # the session limit is never silent: the first alert it holds back is reported, once
    [skip] = held.skipped
    assert (skip.rule, skip.reason, skip.limit, skip.missing) == ("k", "alert_limit", 1, ())
    assert skip.to_dict()["reason"] == "alert_limit"
    again = capped.feed(sig("client.key", 2, {"combo": "C"}), T0)
    assert again.alerts == () and again.skipped == ()
    assert fed(capped, sig("client.key", 1, {"combo": "B"}, session="s2")) != []
    # a rule's own max_per_session is the rule's de-duplication, not a limit to report
    assert out[4].skipped == ()


def test_inhibition_mutes_lesser_companions_then_expires(engine: Engine) -> None:
    out = fed(engine, sig("client.capture_stream", 0, {"element": "video"}),
              sig("client.media_recorder", 5))
    assert [(a.rule, a.severity.label) for a in out] == [
        ("page-capture-stream", "notice"), ("page-tap-then-record", "critical")]
    assert fed(engine, sig("os.screenshot", 30, {"api": "x"})) == []  # capture-tagged, lesser
    assert [a.rule for a in fed(engine, sig("video.extra_person", 31))] == ["extra-person"]
    later = fed(engine, sig("os.screenshot", 200, {"api": "x"}))
    assert [a.rule for a in later] == ["os-screenshot"]


def test_templates_are_not_code(tmp_path: Path) -> None:
    ruleset = rules_from(tmp_path, """
        rules:
          - id: t
            title: t
            description: d
            signals: [client.key]
            severity: info
            message: "pressed $combo ({0.__class__}) $$5"
            suggested_response: [x]
    """)
    engine = Engine(ruleset, default_consent=FULL_MONITORING)
    (a,) = fed(engine, sig("client.key", 0, {"combo": "${combo} {0.__class__.__mro__}"}))
    assert a.message == "pressed ${combo} {0.__class__.__mro__} ({0.__class__}) $5"


def test_same_input_same_alert_ids(default_rules: Ruleset) -> None:
    def run() -> list[tuple[str, str, int]]:
        engine = Engine(default_rules, default_consent=FULL_MONITORING)
        rng = random.Random(7)
        out = []
        for i in range(200):
            combo = rng.choice(["PrintScreen", "Ctrl+C", "Meta+Shift+4"])
            for a in fed(engine, sig("client.key", i * 7, {"combo": combo}),
                         sig("audio.shutter", i * 7 + 1)):
                out.append((a.id, a.rule, a.at))
        return out
    first = run()
    assert first and first == run()
    assert len({i for i, _r, _t in first}) == len(first)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 20)), min_size=5, max_size=60))
def test_clean_sessions_never_raise_above_notice(default_rules: Ruleset,
                                                 steps: list[tuple[int, int]]) -> None:
    engine = Engine(default_rules, default_consent=FULL_MONITORING)
    devices = {"change": "initial", "devices": [
        {"kind": "audioinput", "label": "Krisp Microphone", "id": "k"},
        {"kind": "audioinput", "label": "MacBook Pro Microphone", "id": "m"},
        {"kind": "audiooutput", "label": "Microsoft Teams Audio", "id": "t"},
        {"kind": "videoinput", "label": "FaceTime HD Camera", "id": "c"}]}
    alerts = fed(engine, sig("client.devices", 0, devices))
    t = 0.0
    for kind, gap in steps:
        t += gap
        if kind == 0:
            alerts += fed(engine, sig("client.heartbeat", t))
        elif kind == 1:  # a brief focus change
            alerts += fed(engine, sig("client.focus", t, {"focused": False}),
                          sig("client.focus", t + 3, {"focused": True}))
        elif kind == 2:  # a brief switch to another tab
            alerts += fed(engine, sig("client.visibility", t, {"state": "hidden"}),
                          sig("client.visibility", t + 10, {"state": "visible"}))
        else:
            alerts += fed(engine, sig("client.heartbeat", t),
                          sig("client.fullscreen", t, {"active": True}))
        alerts += engine.tick(T0 + int(t * 1000) + 5000).alerts
    assert all(a.severity <= Severity.NOTICE for a in alerts), [
        (a.rule, a.severity) for a in alerts]


def test_idle_session_state_is_small(default_rules: Ruleset) -> None:
    engine = Engine(default_rules, default_consent=FULL_MONITORING)
    for i in range(50):  # warm caches
        fed(engine, sig("client.heartbeat", i * 15, session="warm"))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for n in range(500):
        s = f"idle-{n}"
        engine.set_consent(s, FULL_MONITORING, T0)
        for i in range(4):
            fed(engine, sig("client.heartbeat", i * 15, session=s),
                sig("client.focus", i * 15 + 1, {"focused": i % 2 == 0}, session=s))
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    assert grown / 500 < 20_000, f"{grown / 500:.0f} bytes per idle session"


def test_outcome_is_falsy_when_empty(engine: Engine) -> None:
    assert not Outcome()
    assert not engine.feed(sig("client.fullscreen", 0, {"active": True}), T0)


def test_exceptions_lists_and_macros(tmp_path: Path) -> None:
    ruleset = rules_from(tmp_path, """
        lists:
          shots: [PrintScreen, Meta+Shift+5]
        macros:
          is_shot: combo in shots
        rules:
          - id: shots
            title: shots
            description: d
            signals: [client.key]
            when: is_shot
            exceptions:
              - {name: own-capture-ui, when: 'combo == "Meta+Shift+5"', reason: platform UI}
            severity: info
            message: $combo
            suggested_response: [x]
            cooldown: 0s
    """)
    engine = Engine(ruleset, default_consent=FULL_MONITORING)
    out = fed(engine, sig("client.key", 0, {"combo": "PrintScreen"}),
              sig("client.key", 1, {"combo": "Meta+Shift+5"}),
              sig("client.key", 2, {"combo": "Ctrl+C"}))
    assert [a.message for a in out] == ["PrintScreen"]


def test_feed_many_collects_outcomes(engine: Engine) -> None:
    out = engine.feed_many([sig("os.screenshot", 0, {"api": "x"}), sig("video.frozen", 1)], T0)
    assert [a.rule for a in out.alerts] == ["os-screenshot", "video-frozen"]
