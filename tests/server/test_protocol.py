"""The sans-I/O wire parser: typed messages or InvalidSignal with a code, never a crash."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.protocol import (
    ERROR_CODES,
    AlertFeedback,
    ConsentSet,
    Resume,
    SignalItem,
    SignalsBatch,
    parse_message,
    to_signal,
)
from signals.catalog import CATALOGUE
from signals.errors import InvalidSignal

NOW = 1_700_000_000_000


def code_of(frame: Any, role: str = "patient", **kw: Any) -> str:
    with pytest.raises(InvalidSignal) as info:
        parse_message(frame, role, **kw)  # type: ignore[arg-type]
    return info.value.code


def test_parses_each_patient_message() -> None:
    m = parse_message('{"type":"signal","seq":3,"signal":"client.focus","at":5,'
                      '"data":{"focused":false}}', "patient")
    assert isinstance(m, SignalItem) and m.seq == 3 and m.data == {"focused": False}
    batch = parse_message(json.dumps({"type": "signals", "items": [
        {"type": "signal", "seq": 1, "signal": "client.heartbeat", "at": 1}]}), "patient")
    assert isinstance(batch, SignalsBatch) and [i.seq for i in batch.items] == [1]


def test_parses_each_clinician_message() -> None:
    assert isinstance(parse_message('{"type":"resume","after":7}', "clinician"), Resume)
    fb = parse_message('{"type":"alert.feedback","id":"a","verdict":"false_positive"}',
                       "clinician")
    assert isinstance(fb, AlertFeedback) and fb.verdict == "false_positive"
    cs = parse_message('{"type":"consent.set","recording":"patient_allowed"}', "clinician")
    assert isinstance(cs, ConsentSet) and cs.recording == "patient_allowed"


def test_consent_set_refuses_monitoring_and_ignores_other_unknown_fields() -> None:
    # monitoring scopes come from the patient's token: a consent.set that carries them was
    # answered ok and changed nothing (the clinician believed video was withdrawn)
    for frame in ('{"type":"consent.set","recording":"prohibited","monitoring":["device"]}',
                  '{"type":"consent.set","monitoring":[]}'):
        with pytest.raises(InvalidSignal) as info:
            parse_message(frame, "clinician")
        assert info.value.code == "bad_field"
        words = str(info.value)
        assert "only the recording policy" in words and "patient's token" in words
    # a field this sidecar does not know is still ignored (a newer panel)
    cs = parse_message('{"type":"consent.set","recording":"prohibited","note":"x"}',
                       "clinician")
    assert isinstance(cs, ConsentSet) and cs.recording == "prohibited"


@pytest.mark.parametrize(("frame", "role", "code"), [
    ("{not json", "patient", "bad_json"),
    ("[1,2]", "patient", "not_object"),
    ('{"type": 5}', "patient", "not_object"),
    ('{"type":"nope"}', "patient", "unknown_type"),
    ('{"type":"resume","after":1}', "patient", "forbidden"),
    ('{"type":"signal","seq":1,"signal":"client.key","at":1}', "clinician", "forbidden"),
    ('{"type":"signal","seq":"1","signal":"client.key","at":1}', "patient", "bad_field"),
    ('{"type":"signal","seq":true,"signal":"client.key","at":1}', "patient", "bad_field"),
    ('{"type":"signal","seq":-1,"signal":"client.key","at":1}', "patient", "bad_field"),
    ('{"type":"resume","after":"x"}', "clinician", "bad_field"),
    ('{"type":"consent.set","recording":"always"}', "clinician", "bad_field"),
    ('{"type":"recording.decision","id":"r","approve":1}', "clinician", "bad_field"),
])
def test_rejections_carry_a_code(frame: str, role: str, code: str) -> None:
    assert code_of(frame, role) == code


def test_size_and_batch_limits() -> None:
    big = json.dumps({"type": "recording.request", "reason": "x" * 2000})
    assert code_of(big, max_bytes=1000) == "too_large"
    items = [{"type": "signal", "seq": i, "signal": "client.heartbeat", "at": 1}
             for i in range(5)]
    assert code_of(json.dumps({"type": "signals", "items": items}), max_batch=4) == "too_large"
    assert code_of(b'{"type":"signal"}') == "binary"


def test_to_signal_checks_catalogue_origin_and_skew() -> None:
    def item(name: str, data: Any, at: int = NOW) -> SignalItem:
        return SignalItem(seq=1, signal=name, at=at, data=data)

    sig = to_signal(item("client.key", {"combo": "PrintScreen"}), session="s", participant="p",
                    now=NOW)
    assert (sig.name, sig.session, sig.participant, sig.seq, sig.at) == (
        "client.key", "s", "p", 1, NOW)
    skewed = to_signal(item("client.key", {"combo": "x"}, at=NOW - 3_600_000), session="s",
                       participant="p", now=NOW, clock_skew_ms=1000)
    assert skewed.at == NOW
    assert to_signal(item("os.screenshot", {"api": "ios"}), session="s", participant="p",
                     now=NOW).source == "os"
    for name, data, code in [("no.such", {}, "unknown_signal"),
                             ("video.frozen", {}, "bad_origin"),
                             ("client.virtual_device", {}, "bad_origin"),
                             ("client.key", {"combo": 3}, "bad_field")]:
        with pytest.raises(InvalidSignal) as info:
            to_signal(item(name, data), session="s", participant="p", now=NOW)
        assert info.value.code == code


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
types = st.sampled_from(["signal", "signals", "webrtc.offer", "recording.request", "alert.ack",
                         "alert.feedback", "consent.set", "resume", "recording.decision", "x"])
names = st.sampled_from([*CATALOGUE, "bogus", ""])
shaped = st.fixed_dictionaries(
    {"type": types},
    optional={"seq": json_values | st.integers(-5, 2**60), "signal": names,
              "at": json_values | st.integers(), "data": json_values, "items": json_values
              | st.lists(st.fixed_dictionaries({"type": st.just("signal"), "seq": st.integers(),
                                                 "signal": names, "at": st.integers(),
                                                 "data": json_values}), max_size=3),
              "id": json_values, "verdict": json_values, "after": json_values,
              "recording": json_values, "approve": json_values, "sdp": json_values,
              "reason": json_values})
frames = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50),
    json_values.map(json.dumps),
    shaped.map(json.dumps),
    shaped.map(lambda d: json.dumps(d)[:-1]),
)


@settings(max_examples=1000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(frame=frames, role=st.sampled_from(["patient", "clinician"]))
def test_fuzz_parser_raises_only_invalid_signal(frame: Any, role: str) -> None:
    try:
        message = parse_message(frame, role, max_bytes=4096, max_batch=3)  # type: ignore[arg-type]
    except InvalidSignal as exc:
        assert exc.code in ERROR_CODES
        return
    items = message.items if isinstance(message, SignalsBatch) else (
        [message] if isinstance(message, SignalItem) else [])
    for item in items:
        try:
            sig = to_signal(item, session="s", participant="p", now=NOW)
        except InvalidSignal as exc:
            assert exc.code in ERROR_CODES
        else:
            assert sig.name in CATALOGUE and sig.source in ("client", "os")


signal_shaped = st.fixed_dictionaries(
    {"type": st.just("signal")},
    optional={"seq": json_values | st.integers(-5, 2**60) | st.sampled_from([0, 2**53, 2**53 + 1]),
              "signal": names | st.text(max_size=70), "data": json_values,
              "at": json_values | st.integers(-5, 2**60)
              | st.floats(min_value=-1.0, max_value=2.0**54)
              | st.sampled_from([float("inf"), float("nan"), 2**53, 2.0**53, 0.0, -0.0])})


@settings(max_examples=2000, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(raw=signal_shaped, ascii_only=st.booleans(),
       layout=st.sampled_from(["compact", "spaced", "indented"]))
def test_fast_signal_path_agrees_with_the_general_one(raw: dict[str, Any], ascii_only: bool,
                                                       layout: str) -> None:
    """A frame starting like the SDK's ``signal`` items (with or without JSON's whitespace) is
    read by pydantic's JSON parser in one pass; it must give exactly what ``json.loads`` and
    validation give, or step aside."""
    from pydantic import ValidationError
    ordered = {"type": "signal", **raw}  # the type first, as the SDK writes it
    frame = json.dumps(ordered, ensure_ascii=ascii_only,
                       separators=(",", ":") if layout == "compact" else None,
                       indent=2 if layout == "indented" else None)
    try:
        expected: Any = SignalItem.model_validate(json.loads(frame))
    except ValidationError:
        expected = "bad_field"
    try:
        got: Any = parse_message(frame, "patient")
    except InvalidSignal as exc:
        got = exc.code
    assert got == expected or repr(got) == repr(expected)  # NaN != NaN, same text
    if isinstance(got, SignalItem):
        assert type(got.at) is type(expected.at)


@pytest.mark.parametrize("frame", [
    '{"type":"signal","seq":1,"signal":"client.focus","at":5,"data":{"focused":true}}',
    '{"type": "signal", "seq": 1, "signal": "client.focus", "at": 5, "data": {"focused": true}}',
    '{\n  "type" : "signal",\r\n\t"seq": 1, "signal": "client.focus", "at": 5}',
])
def test_a_signal_item_with_or_without_spaces_is_read_in_one_pass(
        frame: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's json.dumps and pretty printers put spaces in (a native app's or a backend's
    client): such an item was parsed twice, by json.loads and then validation, at about twice
    the CPU of the SDK's compact one."""
    def general_path(*_: Any, **__: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr("monitor.protocol.json.loads", general_path)
    item = parse_message(frame, "patient")
    assert isinstance(item, SignalItem) and (item.seq, item.signal) == (1, "client.focus")


@pytest.mark.parametrize("odd", [
    '{"type":"signal","seq":1,"signal":"client.focus","at":5,"data":{"x":"\\ud800"}}',
    '{"type":"signal","seq":1,"signal":"client.focus","at":5,"data":{"x":NaN}}',
    '{"type":"signal","seq":1,"signal":"client.focus","at":NaN}',
    '{"type":"signal","seq":1,"seq":2,"signal":"client.focus","at":5}',
    '{"type":"signal","seq":1,"signal":"client.focus","at":5,"data":{"x":1e400}}',
    '{"type":"signal","seq":1,"signal":"client.focus","at":5,"data":' + "[" * 5000 + "]" * 5000
    + "}",
])
def test_fast_signal_path_edge_cases(odd: str) -> None:
    """Lone surrogates, NaN, duplicate keys, overflowing floats, deep nesting: same outcome
    as json.loads and validation."""
    try:
        loaded = json.loads(odd)
    except (ValueError, RecursionError):
        expected: Any = "bad_json"
    else:
        try:
            expected = SignalItem.model_validate(loaded)
        except ValueError:
            expected = "bad_field"
    try:
        got: Any = parse_message(odd, "patient", max_bytes=10**6)
    except InvalidSignal as exc:
        got = exc.code
    assert repr(got) == repr(expected)


def test_deeply_nested_json_is_a_clear_error() -> None:
    frame = '{"type":"signal","data":' + "[" * 100_000 + "]" * 100_000 + "}"
    assert code_of(frame, max_bytes=10**6) in ("bad_json", "bad_field")
