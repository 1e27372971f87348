"""Edges of the engine's semantics a probe of the rule language found wrong: a correlation's
own ``when``, names a client's data must not override, signals stamped out of order, one
signal filling two steps, cooldowns across a recording-policy change, consent changes and
what a withdrawal leaves behind."""

from __future__ import annotations

from pathlib import Path

from rules import Engine, Ruleset
from signals import FULL_MONITORING, Consent
from tests.rules.conftest import T0, fed, rules_from, sig

DEVICE_ONLY = Consent(frozenset({"device"}), "prohibited")
NOTHING = Consent(frozenset(), "prohibited")


RECORDER = ("client.capture_stream", {"element": "video"}), ("client.media_recorder", {})


def test_sequence_and_all_of_rules_apply_their_own_when(tmp_path: Path) -> None:
    text = """
        rules:
          - id: {kind}-gated
            title: gated
            description: d
            signals: [client.capture_stream, client.media_recorder]
            when: signal == "client.heartbeat"
            {kind}:
              within: 30s
              steps: [{{signal: client.capture_stream}}, {{signal: client.media_recorder}}]
            severity: warning
            message: fired
            suggested_response: [x]
    """
    for kind in ("sequence", "all_of"):
        engine = Engine(rules_from(tmp_path, text.format(kind=kind)),
                        default_consent=FULL_MONITORING)
        (a, da), (b, db) = RECORDER
        assert fed(engine, sig(a, 0, da), sig(b, 1, db)) == [], kind


def test_a_clients_extra_data_never_stands_in_for_the_engines_own_names(
        engine: Engine, tmp_path: Path) -> None:
    """Data schemas keep extra keys; a ``count`` or ``participant`` sent in them must not
    reach the clinician's message or decide de-duplication."""
    spoof = {"combo": "PrintScreen", "count": 9999, "within": "1 second",
             "participant": "someone else"}
    alerts = fed(engine, sig("client.key", 1, spoof), sig("client.key", 2, spoof),
                 sig("client.key", 3, spoof))
    repeated = next(a for a in alerts if a.rule == "repeated-screenshots")
    assert repeated.message == "3 screenshots were taken within 2 minutes."
    # window-mode's fingerprint names the signal: a data field "signal" does not split it
    pips = fed(engine, *(sig("client.pip", t, {"active": True, "signal": f"x{t}"})
                         for t in (10, 11, 12)))
    assert [a.rule for a in pips] == ["window-mode"]
    # a fingerprint on participant tells participants apart
    ruleset = rules_from(tmp_path, """
        rules:
          - id: key-per-participant
            title: key pressed
            description: d
            signals: [client.key]
            group_by: session
            fingerprint: [participant]
            severity: notice
            message: $participant pressed $combo
            suggested_response: [x]
            cooldown: 10m
    """)
    per = Engine(ruleset, default_consent=FULL_MONITORING)
    got = fed(per, sig("client.key", 1, {"combo": "a"}, participant="alice"),
              sig("client.key", 2, {"combo": "a"}, participant="bob"),
              sig("client.key", 3, {"combo": "a", "participant": "bob"}, participant="alice"))
    assert [a.message for a in got] == ["alice pressed a", "bob pressed a"]


def test_a_clients_extra_data_never_stands_in_for_an_earlier_steps_field(
        engine: Engine) -> None:
    """A correlation's placeholder the ending signal's schema lacks is filled from the
    evidence signal that has it as a field: an extra key of the same name in the ending
    signal's data (kept by the schemas) does not replace it in the clinician's message."""
    alerts = fed(engine, sig("client.display_capture", 0, {"api": "getDisplayMedia"}),
                 sig("client.media_recorder", 2, {"api": "nothing to worry about"}))
    (alert,) = [a for a in alerts if a.rule == "page-display-capture-then-record"]
    assert "(via getDisplayMedia)" in alert.message, alert.message


def test_signals_stamped_out_of_order(engine: Engine) -> None:
    """Another device's clock or a late resend: a sequence is in order by the signals'
    own times, a window is judged from its newest signal, evidence is in time order."""
    (a, da), (b, db) = RECORDER
    alerts = fed(engine, sig(a, 10, da), sig(b, 5, db))
    assert "page-tap-then-record" not in [x.rule for x in alerts]
    assert "page-tap-then-record" in [x.rule for x in fed(engine, sig(b, 12, db))]
    shots = fed(engine, *(sig("audio.shutter", t) for t in (200, 0, 210)))
    assert "repeated-shutter" not in [x.rule for x in shots]  # 0 is not within 2 min of 210
    late = fed(engine, sig("audio.shutter", 205))
    (rep,) = [x for x in late if x.rule == "repeated-shutter"]
    assert [e.at - T0 for e in rep.evidence] == [200_000, 205_000, 210_000]


def test_an_all_of_with_two_steps_of_one_kind_needs_two_signals(tmp_path: Path) -> None:
    ruleset = rules_from(tmp_path, """
        rules:
          - id: two-shutters
            title: two shutters
            description: d
            signals: [audio.shutter]
            all_of: {within: 10s, steps: [{signal: audio.shutter}, {signal: audio.shutter}]}
            severity: warning
            message: two shutters ($count)
            suggested_response: [x]
    """)
    engine = Engine(ruleset, default_consent=FULL_MONITORING)
    assert fed(engine, sig("audio.shutter", 0)) == []
    (alert,) = fed(engine, sig("audio.shutter", 4))
    assert [e.at - T0 for e in alert.evidence] == [0, 4000]


def test_an_alert_more_severe_than_the_last_is_not_held_back_by_its_cooldown(
        engine: Engine) -> None:
    """Recording agreed: a display capture is a note. The policy then becomes prohibited: the
    next capture is a warning and must reach the clinician within the note's cooldown."""
    engine.set_consent("s1", Consent(FULL_MONITORING.monitoring, "patient_allowed"), T0)
    capture = ("client.display_capture", {"api": "getDisplayMedia"})
    (note,) = fed(engine, sig(*capture[:1], 1, capture[1]))
    assert note.severity.label == "info"
    engine.set_consent("s1", FULL_MONITORING, T0 + 3000)
    (warning,) = fed(engine, sig(*capture[:1], 4, capture[1]))
    assert warning.severity.label == "warning"
    assert fed(engine, sig(*capture[:1], 5, capture[1])) == []  # the same again: cooled down


def test_a_grant_after_an_explicit_nothing_applies_from_its_own_time(
        default_rules: Ruleset) -> None:
    engine = Engine(default_rules)  # the default grants nothing
    engine.set_consent("s1", NOTHING, T0 + 1000)  # the token: nothing granted
    engine.set_consent("s1", DEVICE_ONLY, T0 + 60_000)  # granted later
    assert engine.consent("s1", T0 + 30_000) == NOTHING
    assert fed(engine, sig("client.key", 58, {"combo": "PrintScreen"})) == []
    assert [a.rule for a in fed(engine, sig("client.key", 61, {"combo": "PrintScreen"}))] \
        == ["screenshot-key"]


def test_a_consent_withdrawal_forgets_what_its_rules_gathered(engine: Engine) -> None:
    """Hidden, then device monitoring withdrawn (the page becoming visible is not seen),
    then granted again: the old hold must not fire claiming two minutes in the background."""
    fed(engine, sig("client.visibility", 0, {"state": "hidden"}))
    engine.set_consent("s1", Consent(frozenset({"audio", "video"}), "prohibited"), T0 + 10_000)
    engine.set_consent("s1", FULL_MONITORING, T0 + 30_000)
    assert engine.tick(T0 + 130_000).alerts == ()
    # a fresh hidden spell after the grant is timed as usual
    fed(engine, sig("client.visibility", 140, {"state": "hidden"}))
    assert [a.rule for a in engine.tick(T0 + 261_000).alerts] == ["page-hidden-long"]


def test_a_device_lists_alerts_come_most_severe_first(engine: Engine) -> None:
    out = engine.feed(sig("client.devices", 0, {"change": "initial", "devices": [
        {"kind": "videoinput", "label": "OBS Virtual Camera", "id": "a"},
        {"kind": "audioinput", "label": "BlackHole 2ch", "id": "b"},
        {"kind": "audioinput", "label": "Krisp Microphone", "id": "c"}]}), T0)
    severities = [a.severity for a in out.alerts]
    assert len(severities) >= 3 and severities == sorted(severities, reverse=True)


def test_distinct_ignores_signals_without_its_field(tmp_path: Path) -> None:
    ruleset = rules_from(tmp_path, """
        rules:
          - id: distinct-api
            title: distinct api
            description: d
            signals: [client.display_capture, client.key]
            distinct: {field: api, n: 2, within: 1m}
            severity: notice
            message: $distinct
            suggested_response: [x]
    """)
    engine = Engine(ruleset, default_consent=FULL_MONITORING)
    assert fed(engine, sig("client.display_capture", 0, {"api": "a"}),
               sig("client.key", 1, {"combo": "x"})) == []  # no api: not a second value
    (alert,) = fed(engine, sig("client.display_capture", 2, {"api": "b"}))
    assert alert.message == "a, b"


def test_a_long_consent_history_never_grants_a_late_signal_more_than_its_time_had(
        engine: Engine) -> None:
    # monitoring withdrawn at 10 s, granted again at 20 s and re-sent eight times: the engine
    # keeps 8 records, so the withdrawal is folded away. A signal stamped at 15 s, arriving
    # late, must still be judged as withheld, not by the oldest record kept.
    engine.set_consent("s1", NOTHING, T0 + 10_000)
    for at_s in range(20, 110, 10):
        engine.set_consent("s1", FULL_MONITORING, T0 + at_s * 1000)
    late = sig("os.screenshot", 15, {"api": "x"})
    assert engine.consent("s1", late.at) == NOTHING
    assert fed(engine, late) == []
    (now,) = fed(engine, sig("os.screenshot", 105, {"api": "x"}))
    assert now.rule == "os-screenshot"


def test_an_agreed_recording_gets_its_own_suggested_responses(default_rules: Ruleset) -> None:
    """Under an agreed policy a capture rule is a note: its suggestions must not ask the
    patient whether anything is being recorded, as if it were not agreed."""
    capture = sig("client.display_capture", 1, {"api": "getDisplayMedia"})
    agreed = Engine(default_rules, default_consent=Consent(FULL_MONITORING.monitoring,
                                                           "patient_allowed"))
    (note,) = fed(agreed, capture)
    assert note.severity.label == "info"
    assert note.suggested_response[0].startswith("No action needed")
    assert not any("recorded" in r for r in note.suggested_response)
    (alert,) = fed(Engine(default_rules, default_consent=FULL_MONITORING), capture)
    assert any("recorded" in r for r in alert.suggested_response)
    # every capture rule of the defaults has its agreed suggestions
    assert all(r.agreed_suggested_response for r in default_rules.rules if r.capture)
