"""Benign therapy sessions through the default rules: what a clinician sees when nothing is
wrong (alert fatigue, wording), and that true recording setups still alert.

Each scenario is a realistic signal sequence of a 50-minute session (heartbeats every 5 s,
media episodes reported when confirmed and again when closed, both stamped at their start,
as the live sidecar does)."""

from __future__ import annotations

import random
from typing import Any

from rules import Alert, Engine, Ruleset
from rules.model import Severity
from signals import FULL_MONITORING, Signal, make_signal
from signals.consent import Consent

from .conftest import T0, sig

SESSION_S = 3000  # 50 minutes


def media(name: str, at_s: float, confidence: float, **data: Any) -> list[Signal]:
    """A media episode as the live sidecar reports it: when confirmed and when closed."""
    at = T0 + int(at_s * 1000)
    return [make_signal(name, at, {"confidence": confidence, **data, "episode": state},
                        session="s1", source="media", confidence=confidence)
            for state in ("open", "closed")]


def run(default_rules: Ruleset, signals: list[Signal], *, consent: Consent = FULL_MONITORING,
        until_s: int = SESSION_S) -> list[Alert]:
    """Feed ``signals`` in time order, ticking every second as the server does."""
    engine = Engine(default_rules, default_consent=consent)
    alerts: list[Alert] = []
    pending = sorted(signals, key=lambda s: s.at)
    for t in range(until_s + 1):
        now = T0 + t * 1000
        while pending and pending[0].at <= now:
            alerts += engine.feed(pending.pop(0), now).alerts
        alerts += engine.tick(now).alerts
    return alerts


def heartbeats(gaps: tuple[tuple[int, int], ...] = ()) -> list[Signal]:
    return [sig("client.heartbeat", t) for t in range(0, SESSION_S, 5)
            if not any(a <= t < b for a, b in gaps)]


def devices(*labels: tuple[str, str], change: str = "initial") -> Signal:
    return sig("client.devices", 1, {"change": change, "devices": [
        {"kind": kind, "label": label, "id": f"d{i}"} for i, (kind, label) in enumerate(labels)]})


def test_a_gaming_pc_with_noise_suppression_raises_nothing_above_a_notice(
        default_rules: Ruleset) -> None:
    """NVIDIA Broadcast (camera, microphone and speakers), the NVIDIA driver's virtual audio
    output and Krisp: all common and harmless, with a noise-suppressed (virtual-sounding)
    microphone. The output-only virtual audio device cannot be the microphone, so it
    corroborates nothing."""
    alerts = run(default_rules, [*heartbeats(), devices(
        ("audioinput", "Default - Microphone (NVIDIA Broadcast)"),
        ("audioinput", "Microphone (NVIDIA Broadcast)"),
        ("audiooutput", "Speakers (NVIDIA Broadcast)"),
        ("audiooutput", "NVIDIA Virtual Audio Device (Wave Extensible) (WDM)"),
        ("videoinput", "NVIDIA Broadcast"),
        ("audioinput", "Krisp Microphone (Krisp Audio)")),
        *media("audio.virtual_source", 60, 0.8), *media("video.synthetic_source", 70, 0.85)])
    assert max(a.severity for a in alerts) <= Severity.NOTICE, [
        (a.rule, a.severity.label) for a in alerts]
    assert "loopback-audio-corroborated" not in {a.rule for a in alerts}
    camera = [a for a in alerts if a.rule == "virtual-camera-device"]
    assert camera and "camera list" not in camera[0].message  # it named a microphone


def test_a_family_session_is_not_told_about_extra_people_every_ten_minutes(
        default_rules: Ruleset) -> None:
    rng = random.Random(7)
    signals = heartbeats()
    t = 5
    while t < SESSION_S:  # three people in view; the face count flaps as they turn
        dur = rng.randint(30, 240)
        signals += media("video.extra_person", t, 0.8, faces=3, duration_s=float(dur))
        t += dur + rng.randint(5, 60)
    alerts = [a for a in run(default_rules, signals) if "privacy" in a.tags]
    assert 1 <= len(alerts) <= 2, [(a.rule, (a.at - T0) // 1000) for a in alerts]
    assert "family or couples session" in alerts[0].message


def test_dim_light_on_a_couch_raises_no_notice_and_little_information(
        default_rules: Ruleset) -> None:
    """Face detection flickers in poor light: low-confidence no-face and extra-face episodes
    (0.7 or 0.8 times a lighting factor of 0.4 to 0.6)."""
    rng = random.Random(11)
    signals = heartbeats()
    t = 10
    while t < SESSION_S:
        dur = rng.randint(4, 60)
        if rng.random() < 0.7:
            signals += media("video.no_person", t, round(0.7 * rng.uniform(0.4, 0.6), 3),
                             lighting="poor")
        else:
            signals += media("video.extra_person", t, round(0.8 * rng.uniform(0.4, 0.6), 3),
                             lighting="poor", faces=2)
        t += dur + rng.randint(20, 200)
    alerts = run(default_rules, signals)
    assert all(a.severity is Severity.INFO for a in alerts), [
        (a.rule, a.severity.label) for a in alerts]
    assert len(alerts) <= 4, [(a.rule, (a.at - T0) // 1000) for a in alerts]


def test_a_flaky_connection_says_the_page_went_silent_at_most_twice(
        default_rules: Ruleset) -> None:
    """Blips of 30 s (nothing), 60 s, and a reconnect storm of 50 s gaps every 2 minutes:
    the clinician's status line says 'silent' each time; the alert need not repeat."""
    gaps = ((300, 330), (900, 960), (1500, 1560),
            *((2000 + i * 120, 2050 + i * 120) for i in range(5)))
    alerts = run(default_rules, heartbeats(gaps))
    assert {a.rule for a in alerts} == {"sdk-silent"}
    assert len(alerts) <= 2, [(a.at - T0) // 1000 for a in alerts]


def test_an_approved_recording_is_noted_quietly_and_never_contradicted(
        default_rules: Ruleset) -> None:
    """The clinician approved the patient's request (policy patient_allowed); the patient
    records with the page's own APIs and takes screenshots."""
    allowed = Consent(FULL_MONITORING.monitoring, "patient_allowed")
    alerts = run(default_rules, [
        *heartbeats(),
        sig("client.display_capture", 625, {"api": "getDisplayMedia"}),
        sig("client.media_recorder", 626, {"tracks": 2}),
        *(sig("client.key", t, {"combo": "PrintScreen"}) for t in (700, 760, 800)),
        sig("os.screenshot", 900, {"api": "UIApplicationUserDidTakeScreenshotNotification"})],
        consent=allowed)
    assert alerts and all(a.severity is Severity.INFO for a in alerts)
    assert all("permitted" in a.message for a in alerts)
    for a in alerts:  # a suggestion must not tell the patient something untrue
        assert not any("not part of the agreement" in r for r in a.suggested_response), a.rule


def test_messages_speak_in_words_not_signal_names(default_rules: Ruleset) -> None:
    alerts = run(default_rules, [
        *heartbeats(), sig("client.pip", 100, {"active": True}),
        sig("client.fullscreen", 900, {"active": False}),
        sig("client.screens", 1, {"extended": True})], until_s=1000)
    assert {a.rule for a in alerts} == {"window-mode", "extra-screen"}
    for a in alerts:
        assert "client." not in a.message and "active " not in a.message, a.message


def test_true_recording_setups_still_alert(default_rules: Ruleset) -> None:
    """The softer wording and severities keep the real cases: a screen capture and an in-page
    recorder, screenshots with a shutter, and a loopback microphone that sounds virtual."""
    def severities(signals: list[Signal]) -> dict[str, str]:
        return {a.rule: a.severity.label for a in run(default_rules, signals, until_s=600)}

    assert severities([sig("client.display_capture", 300, {"api": "getDisplayMedia"}),
                       sig("client.media_recorder", 302, {"tracks": 2})]) == {
        "page-display-capture": "warning",  # alone it may be a screen share
        "page-display-capture-then-record": "critical"}  # the recorder alert is folded in
    assert severities([sig("client.capture_stream", 10, {"element": "video"}),
                       sig("client.media_recorder", 15, {"tracks": 1})]
                      )["page-tap-then-record"] == "critical"
    shots = severities([*(sig("client.key", t, {"combo": "Meta+Shift+4"}) for t in (100, 130, 160)),
                        *media("audio.shutter", 161, 0.8)])
    assert shots["repeated-screenshots"] == shots["screenshot-heard"] == "warning"
    routed = severities([devices(("audioinput", "BlackHole 2ch"), ("audiooutput", "BlackHole 2ch"),
                                 ("videoinput", "OBS Virtual Camera")),
                         *media("video.loop", 90, 0.8), *media("audio.virtual_source", 120, 0.8)])
    assert routed["loopback-audio-corroborated"] == "warning"
    assert routed["loopback-audio-device"] == "notice"
    assert routed["video-loop"] == "notice"
