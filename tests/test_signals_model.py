"""The signal catalogue and the consent model, at the boundary."""

import pytest

from signals import CATALOGUE, Consent, InvalidSignal, make_signal


def test_every_contract_signal_is_catalogued() -> None:
    contract = {
        "client.visibility", "client.focus", "client.devices", "client.virtual_device",
        "client.display_capture", "client.media_recorder", "client.capture_stream",
        "client.key", "client.screens", "client.fullscreen", "client.pip", "client.heartbeat",
        "os.screen_capture", "os.screenshot", "audio.shutter", "audio.virtual_source",
        "video.extra_person", "video.no_person", "video.obscured", "video.frozen",
        "video.loop", "video.synthetic_source",
    }
    assert contract <= set(CATALOGUE)


def test_valid_signal_keeps_extra_fields() -> None:
    s = make_signal("client.visibility", 5, {"state": "hidden", "away_ms": 3, "x": 1})
    assert s.data == {"state": "hidden", "away_ms": 3, "x": 1}
    assert s.source == "client"
    assert s.evidence() == {"signal": "client.visibility", "at": 5, "data": s.data}


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("client.nope", {}, "unknown_signal"),
        ("client.visibility", {"state": "gone"}, "bad_field"),
        ("client.focus", {"focused": "yes"}, "bad_field"),
        ("client.devices", {"change": "initial", "devices": [{"kind": "x", "label": "", "id": ""}]},
         "bad_field"),
        ("client.key", {}, "bad_field"),
    ],
)
def test_invalid_signal_is_a_clear_error(name: str, data: object, code: str) -> None:
    with pytest.raises(InvalidSignal) as info:
        make_signal(name, 0, data)
    assert info.value.code == code
    assert name.split(".")[0] in str(info.value)


def test_consent_parse_and_defaults() -> None:
    c = Consent.parse('{"monitoring": ["video", "device"], "recording": "patient_allowed"}')
    assert c.allows("device") and c.allows("video") and not c.allows("audio")
    assert c.to_dict() == {"monitoring": ["device", "video"], "recording": "patient_allowed"}
    assert Consent().to_dict() == {"monitoring": [], "recording": "prohibited"}
    with pytest.raises(InvalidSignal):
        Consent.parse({"monitoring": ["camera"]})
    with pytest.raises(InvalidSignal):
        Consent.parse("{nope")
