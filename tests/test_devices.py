"""The device-label classifier and the client.virtual_device signals it derives."""

from __future__ import annotations

import pytest

from signals import make_signal
from signals.devices import DeviceClassifier, default_classifier, derive_virtual_devices
from signals.errors import ConfigError, SessionguardError

# (label as a browser might report it, kind, expected product, expected category)
KNOWN = [
    ("BlackHole 2ch", "audioinput", "BlackHole", "loopback_audio"),
    ("BlackHole 16ch (Virtual)", "audiooutput", "BlackHole", "loopback_audio"),
    ("Soundflower (2ch)", "audioinput", "Soundflower", "loopback_audio"),
    ("Loopback Audio", "audioinput", "Loopback Audio", "loopback_audio"),
    ("CABLE Output (VB-Audio Virtual Cable)", "audioinput", "VB-Audio", "loopback_audio"),
    ("CABLE Input (VB-Audio Virtual Cable)", "audiooutput", "VB-Audio", "loopback_audio"),
    ("VoiceMeeter Output (VB-Audio VoiceMeeter VAIO)", "audioinput", "VB-Audio", "loopback_audio"),
    ("Voicemeeter Aux Input", "audiooutput", "Voicemeeter", "loopback_audio"),
    ("Stereo Mix (Realtek(R) Audio)", "audioinput", "Stereo Mix", "loopback_audio"),
    ('"What U Hear" (Sound Blaster)', "audioinput", "What U Hear", "loopback_audio"),
    ("Wave Link Stream", "audioinput", "Wave Link", "loopback_audio"),
    ("OBS Virtual Camera", "videoinput", "OBS Virtual Camera", "virtual_camera"),
    ("ManyCam Virtual Webcam", "videoinput", "ManyCam", "virtual_camera"),
    ("XSplit VCam", "videoinput", "XSplit", "virtual_camera"),
    ("Snap Camera", "videoinput", "Snap Camera", "virtual_camera"),
    ("CamTwist", "videoinput", "CamTwist", "virtual_camera"),
    ("mmhmm Camera", "videoinput", "mmhmm", "virtual_camera"),
    ("e2eSoft iVCam", "videoinput", "e2eSoft", "virtual_camera"),
    ("SplitCam Video Driver", "videoinput", "SplitCam", "virtual_camera"),
    ("NVIDIA Broadcast", "videoinput", "NVIDIA Broadcast", "virtual_camera"),
    ("DroidCam Source 3", "videoinput", "DroidCam", "virtual_camera"),
    ("Iriun Webcam", "videoinput", "Iriun", "virtual_camera"),
    ("EpocCam Camera", "videoinput", "EpocCam", "virtual_camera"),
    ("NDI Webcam Video 1", "videoinput", "NDI", "virtual_camera"),
    ("Avatarify", "videoinput", "Avatarify", "face_swap"),
    ("DeepFaceLive Virtual Camera", "videoinput", "DeepFaceLive", "face_swap"),
    ("Some Brand Virtual Camera", "videoinput", "virtual camera", "virtual_camera"),
    ("Krisp Microphone", "audioinput", "Krisp", "legitimate"),
    ("Krisp Speaker", "audiooutput", "Krisp", "legitimate"),
    ("ZoomAudioDevice", "audiooutput", "ZoomAudioDevice", "legitimate"),
    ("Microsoft Teams Audio", "audioinput", "Microsoft Teams Audio", "legitimate"),
]

ORDINARY = [
    ("MacBook Pro Microphone", "audioinput"),
    ("FaceTime HD Camera", "videoinput"),
    ("Default - Microphone Array (Realtek(R) Audio)", "audioinput"),
    ("Headset (Jabra Evolve2 65)", "audioinput"),
    ("Logitech BRIO (046d:085e)", "videoinput"),
    ("AirPods Pro", "audiooutput"),
    ("Integrated Webcam", "videoinput"),
    ("Speakers (Cable-free Bluetooth)", "audiooutput"),
    ("", "audioinput"),
]


@pytest.mark.parametrize(("label", "kind", "product", "category"), KNOWN)
def test_known_products_match(label: str, kind: str, product: str, category: str) -> None:
    m = default_classifier().classify(label, kind)
    assert m is not None, label
    assert (m.match, m.category) == (product, category)
    assert 0 < m.confidence < 1  # a label match is never certainty


@pytest.mark.parametrize(("label", "kind"), ORDINARY)
def test_ordinary_devices_do_not_match(label: str, kind: str) -> None:
    assert default_classifier().classify(label, kind) is None


def test_matching_is_case_insensitive_and_kind_aware() -> None:
    clf = default_classifier()
    assert clf.classify("blackhole 2CH", "audioinput") is not None
    assert clf.classify("BlackHole 2ch", "videoinput") is None  # not a camera


def test_derive_virtual_devices() -> None:
    devices = make_signal("client.devices", 1000, {"change": "added", "devices": [
        {"kind": "audioinput", "label": "BlackHole 2ch", "id": "a"},
        {"kind": "audioinput", "label": "BlackHole 2ch", "id": "a"},  # listed twice
        {"kind": "videoinput", "label": "FaceTime HD Camera", "id": "b"},
        {"kind": "videoinput", "label": "OBS Virtual Camera", "id": "c"}]},
        session="s", participant="p")
    derived = derive_virtual_devices(devices)
    assert [(d.data["match"], d.data["kind"]) for d in derived] == [
        ("BlackHole", "audioinput"), ("OBS Virtual Camera", "videoinput")]
    for d in derived:
        assert d.name == "client.virtual_device" and d.source == "sidecar"
        assert (d.session, d.participant, d.at) == ("s", "p", 1000)
        make_signal(d.name, d.at, d.data)  # the derived data passes the catalogue schema
    removed = make_signal("client.devices", 2000, {"change": "removed", "devices": [
        {"kind": "audioinput", "label": "BlackHole 2ch", "id": "a"}]})
    assert derive_virtual_devices(removed) == []
    other = make_signal("client.heartbeat", 0, {})
    assert derive_virtual_devices(other) == []


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("devices: [{match: X, pattern: '(', category: loopback_audio}]", "bad pattern"),
        ("devices: [{match: X, pattern: x, category: spyware}]", "category"),
        ("devices: [{match: X, pattern: x, category: legitimate, colour: red}]", "colour"),
        ("devices: [oops", "not valid YAML"),
        ("something: else", "'devices' list"),
    ],
)
def test_bad_device_lists_are_clear_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        DeviceClassifier.from_yaml(text)
    assert isinstance(info.value, SessionguardError) and needle in str(info.value)
