"""The recall probe: real ways a patient records or captures a telehealth session, and what
the clinician is told.

The scenarios themselves are fixtures (tests/fixtures/rules/capture_scenarios.yaml, run by
test_fixtures.py with the others); this module checks what a fixture cannot: the device
labels as operating systems really report them, against the default device list and the
rule each one reaches, and properties that hold across every scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from rules import Engine, Ruleset
from rules.fixtures import FixtureCase, run_case
from rules.model import Severity
from signals import FULL_MONITORING, make_signal
from signals.devices import default_classifier

from .conftest import T0

SCENARIOS = Path(__file__).resolve().parent.parent / "fixtures" / "rules" / "capture_scenarios.yaml"

# (label as the OS reports it, kind, the list entry it must match, the rule it reaches)
CAUGHT = [
    ("CABLE Output (VB-Audio Virtual Cable)", "audioinput", "VB-Audio", "loopback-audio-device"),
    ("CABLE Input (VB-Audio Virtual Cable)", "audiooutput", "VB-Audio", "loopback-audio-device"),
    ("BlackHole 2ch", "audioinput", "BlackHole", "loopback-audio-device"),
    ("Voicemeeter Out B1 (VB-Audio Voicemeeter VAIO)", "audioinput", "VB-Audio",
     "loopback-audio-device"),
    ("Loopback Audio", "audioinput", "Loopback Audio", "loopback-audio-device"),
    ("Soundflower (2ch)", "audioinput", "Soundflower", "loopback-audio-device"),
    ("Stereo Mix (Realtek(R) Audio)", "audioinput", "Stereo Mix", "loopback-audio-device"),
    ("virtual-audio-capturer", "audioinput", "virtual audio", "loopback-audio-device"),
    ("Monitor of Built-in Audio Analog Stereo", "audioinput", "Linux output monitor",
     "loopback-audio-builtin"),
    ("Monitor of Jabra Evolve2 65 Analog Stereo", "audioinput", "Linux output monitor",
     "loopback-audio-builtin"),
    # a virtual sink made for routing audio (pactl load-module module-null-sink ...
    # device.description=Virtual_Microphone): its monitor is the input a browser lists, and
    # it is the sink's, not the sound system's own loopback
    ("Monitor of Virtual_Microphone", "audioinput", "virtual audio", "loopback-audio-device"),
    ("OBS Virtual Camera", "videoinput", "OBS Virtual Camera", "virtual-camera-device"),
    ("ManyCam Virtual Webcam", "videoinput", "ManyCam", "virtual-camera-device"),
    ("XSplit VCam", "videoinput", "XSplit", "virtual-camera-device"),
    ("Snap Camera", "videoinput", "Snap Camera", "virtual-camera-device"),
    ("NVIDIA Broadcast", "videoinput", "NVIDIA Broadcast", "virtual-camera-device"),
    ("Microphone (NVIDIA Broadcast)", "audioinput", "NVIDIA Broadcast", "virtual-camera-device"),
    ("Camo", "videoinput", "Camo", "virtual-camera-device"),
    ("Reincubate Camo", "videoinput", "Camo", "virtual-camera-device"),
    ("EpocCam", "videoinput", "EpocCam", "virtual-camera-device"),
    ("Elgato Virtual Camera", "videoinput", "virtual camera", "virtual-camera-device"),
    ("Microsoft Teams Audio", "audioinput", "Microsoft Teams Audio", "legitimate-audio-driver"),
    ("Krisp Microphone", "audioinput", "Krisp", "legitimate-audio-driver"),
    ("ZoomAudioDevice", "audiooutput", "ZoomAudioDevice", "legitimate-audio-driver"),
]

# ordinary hardware, as the OS reports it: never matched
ORDINARY = [
    ("Realtek High Definition Audio", "audioinput"),
    ("Default - Microphone (Realtek High Definition Audio)", "audioinput"),
    ("Line In (Realtek(R) Audio)", "audioinput"),
    ("MacBook Pro Microphone", "audioinput"),
    ("MacBook Pro Speakers", "audiooutput"),
    ("AirPods", "audioinput"),
    ("AirPods Pro", "audiooutput"),
    ("Headset (Jabra Evolve2 65)", "audioinput"),
    ("Jabra Speak 510", "audiooutput"),
    ("Logitech BRIO", "videoinput"),
    ("HD Pro Webcam C920 (046d:082d)", "videoinput"),
    ("Built-in Audio Analog Stereo", "audioinput"),
    ("Elgato Wave:3", "audioinput"),
    ("Elgato Facecam", "videoinput"),
    ("LG ULTRAFINE (NVIDIA High Definition Audio)", "audiooutput"),
    ("iPhone Microphone", "audioinput"),
]


@pytest.mark.parametrize(("label", "kind", "product", "rule"), CAUGHT)
def test_real_driver_labels_reach_their_rule(default_rules: Ruleset, label: str, kind: str,
                                             product: str, rule: str) -> None:
    m = default_classifier().classify(label, kind)
    assert m is not None and m.match == product, (label, m)
    engine = Engine(default_rules, default_consent=FULL_MONITORING)
    devices = make_signal("client.devices", T0, {"change": "initial", "devices": [
        {"kind": kind, "label": label, "id": "d"}]}, session="s1")
    alerts = engine.feed(devices, T0).alerts
    assert [a.rule for a in alerts] == [rule]
    assert label in alerts[0].message  # the clinician is told which device


@pytest.mark.parametrize(("label", "kind"), ORDINARY)
def test_ordinary_hardware_is_not_matched(label: str, kind: str) -> None:
    assert default_classifier().classify(label, kind) is None


def _scenarios() -> list[dict[str, Any]]:
    return list(yaml.safe_load(SCENARIOS.read_text())["tests"])


def test_critical_only_when_two_sources_agree(default_rules: Ruleset) -> None:
    """Across every scenario: a critical alert always rests on at least two signals."""
    for raw in _scenarios():
        for alert in run_case(FixtureCase.model_validate(raw), default_rules).alerts:
            if alert.severity is Severity.CRITICAL:
                assert len(alert.evidence) >= 2, (raw["name"], alert.rule)


def test_recording_agreed_is_never_more_than_a_note(default_rules: Ruleset) -> None:
    """Across every scenario run again under each agreed policy (kept for the whole
    scenario): no capture alert above info, and no suggested response asks whether anything
    is being recorded."""
    for policy in ("patient_allowed", "provider_records"):
        for raw in _scenarios():
            consent = {"monitoring": ["device", "audio", "video"], **(raw.get("consent") or {}),
                       "recording": policy}
            signals = [i for i in raw["input"] if "signal" in i]  # the policy stays agreed
            case = FixtureCase.model_validate({**raw, "consent": consent, "input": signals,
                                               "expect": []})
            for alert in run_case(case, default_rules).alerts:
                if "capture" in alert.tags:
                    assert alert.severity is Severity.INFO, (raw["name"], alert.rule)
                    assert not any("recording the session" in r or "is being recorded" in r
                                   for r in alert.suggested_response), (raw["name"], alert.rule)
