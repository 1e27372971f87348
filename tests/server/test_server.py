"""The sidecar end to end: a real server on 127.0.0.1, real websockets clients, real SQLite."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from typing import Any
from urllib.parse import quote

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from monitor.store import SqliteStore
from tests.server.conftest import (
    DEVICE,
    SECRET,
    Factory,
    raw_channel,
    recv_json,
    recv_type,
    signal,
    token,
)


def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


async def aget(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    return await asyncio.to_thread(http_get, port, path)


async def test_alert_flow_end_to_end(serve: Factory) -> None:
    h = await serve()
    c1 = await h.clinician(participant="c1")
    c2 = await h.clinician(participant="supervisor")
    p = await h.patient()
    for c in (c1, c2):
        st = await recv_type(c, "status")
        assert st["blind"] is False and st["participants"][0]["sdk"] == "connected"
    await p.send(signal(1))
    assert await recv_json(p) == {"type": "ack", "seq": 1}
    alerts = [await recv_type(c, "alert") for c in (c1, c2)]
    assert alerts[0] == alerts[1]
    a = alerts[0]
    assert (a["rule"], a["severity"], a["seq"], a["session"], a["participant"]) == (
        "test.recorder", "critical", 1, "s1", "p1")
    assert a["evidence"][0]["signal"] == "client.media_recorder" and a["suggested_response"]
    # a resent seq is acknowledged again and not counted twice
    await p.send(signal(1))
    assert await recv_json(p) == {"type": "ack", "seq": 1}
    await p.send(json.dumps({"type": "signals", "items": [
        json.loads(signal(2, "client.key", {"combo": "PrintScreen"})), json.loads(signal(1))]}))
    assert await recv_json(p) == {"type": "ack", "seqs": [2, 1]}
    second = await recv_type(c1, "alert")
    assert (second["rule"], second["seq"]) == ("test.key", 2)
    reg = h.sidecar.metrics.registry
    assert reg.get_sample_value("sessionguard_signals_total",
                                {"signal": "client.media_recorder"}) == 1
    assert reg.get_sample_value("sessionguard_signals_dropped_total",
                                {"reason": "duplicate"}) == 2
    assert reg.get_sample_value("sessionguard_alerts_total",
                                {"rule": "test.recorder", "severity": "critical"}) == 1
    # the clinician acknowledges and gives feedback; both land in the audit trail
    await c1.send(json.dumps({"type": "alert.ack", "id": a["id"]}))
    assert await recv_type(c1, "ok") == {"type": "ok", "ref": "alert.ack", "id": a["id"]}
    await c1.send(json.dumps({"type": "alert.feedback", "id": a["id"], "verdict": "confirmed"}))
    assert (await recv_type(c1, "ok"))["ref"] == "alert.feedback"
    await c1.send(json.dumps({"type": "alert.ack", "id": "nope"}))
    assert (await recv_type(c1, "error"))["code"] == "unknown_alert"
    kinds = [e["kind"] for e in h.sidecar.store.store.entries("s1")]
    assert kinds.count("signal") == 2 and kinds.count("alert") == 2
    assert "ack" in kinds and "feedback" in kinds and "consent" in kinds
    assert h.sidecar.store.store.verify("s1").ok


async def test_tokens_of_a_previous_secret_are_accepted_during_a_rotation(
        serve: Factory) -> None:
    old = "the-previous-secret-0123456789-0123456789"
    retired = "a-retired-secret-0123456789-0123456789!!"
    h = await serve(env={"SESSIONGUARD_SECRET_PREVIOUS": old})
    for secret in (SECRET, old):  # the current secret and the one being rotated out
        async with websockets.connect(
                h.url + "?token=" + token("s1", "p1", "patient", DEVICE, secret=secret)) as ws:
            await ws.send(json.dumps({"type": "signal", "seq": 1, "signal": "client.heartbeat",
                                      "at": 0, "data": {}}))
            assert (await recv_type(ws, "ack"))["seq"] == 1
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(h.url + "?token=" + token("s1", "p1", "patient", DEVICE,
                                                           secret=retired))
    assert info.value.response.status_code == 401


async def test_auth_matrix(serve: Factory) -> None:
    h = await serve()
    expired = token("s1", "p1", "patient", DEVICE, ttl_s=1)
    import jwt as pyjwt
    payload = pyjwt.decode(expired, SECRET, algorithms=["HS256"])
    payload.update(iat=payload["iat"] - 7200, exp=payload["exp"] - 7200)
    cases = {
        "": 401,
        "?token=": 401,
        "?token=garbage": 401,
        "?token=" + token("s1", "p1", "patient", secret="another-secret-of-enough-length!!"): 401,
        "?token=" + pyjwt.encode(payload, SECRET, algorithm="HS256"): 401,
        "?token=" + pyjwt.encode({**payload, "exp": payload["exp"] + 9999, "role": "admin"},
                                 SECRET, algorithm="HS256"): 403,
    }
    for query, status in cases.items():
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(h.url + query)
        assert info.value.response.status_code == status, query
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_handshakes_refused_total", {"status": "401"}) == 5
    # a patient can never send clinician messages nor receive alerts
    p = await h.patient()
    await p.send(json.dumps({"type": "resume", "after": 0}))
    assert (await recv_json(p))["code"] == "forbidden"
    await p.send(json.dumps({"type": "consent.set", "recording": "patient_allowed"}))
    assert (await recv_json(p))["code"] == "forbidden"
    c = await h.clinician()
    await c.send(signal(1))
    assert (await recv_type(c, "error"))["code"] == "forbidden"
    # the token in a subprotocol works too (browsers cannot set headers)
    ws = await websockets.connect(h.url, subprotocols=[
        "sessionguard.v1", "sessionguard.token." + token("s1", "c9", "clinician")])  # type: ignore[list-item]
    assert (await recv_json(ws))["type"] == "status" and ws.subprotocol == "sessionguard.v1"
    await ws.close()


async def test_sessions_are_isolated(serve: Factory) -> None:
    h = await serve()
    ca = await h.clinician("A")
    cb = await h.clinician("B")
    pa = await h.patient("A")
    await recv_type(ca, "status")
    await pa.send(signal(1))
    assert (await recv_type(ca, "alert"))["session"] == "A"
    pb = await h.patient("B")
    await pb.send(signal(1))  # same seq in another session: a different signal
    ab = await recv_type(cb, "alert")
    assert (ab["session"], ab["seq"]) == ("B", 1)
    # nothing of A reaches B's clinicians: a fresh panel of B resumes B's one alert
    b2 = await h.clinician("B", participant="c2")
    await b2.send(json.dumps({"type": "resume", "after": 0}))
    resumed = await recv_type(b2, "alert")
    assert resumed["session"] == "B"
    ok = await recv_type(b2, "ok")
    assert ok["count"] == 1
    # B's clinician cannot acknowledge A's alert
    a_alerts = h.sidecar.store.store.alerts_after("A", 0)
    await cb.send(json.dumps({"type": "alert.ack", "id": a_alerts[0]["id"] + "x"}))
    assert (await recv_type(cb, "error"))["code"] == "unknown_alert"
    # a flood and garbage in B do not touch A
    await pb.send("{garbage")
    assert (await recv_type(pb, "error"))["code"] == "bad_json"
    await pa.send(signal(2))
    assert (await recv_type(ca, "alert"))["seq"] == 2


async def test_consent_request_and_approval(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient(consent={"monitoring": ["device"], "recording": "prohibited"})
    await recv_type(c, "status")
    await p.send(json.dumps({"type": "recording.request", "reason": "to review exercises"}))
    req = await recv_type(c, "recording.request")
    assert req["participant"] == "p1" and req["reason"] == "to review exercises"
    assert (await recv_type(p, "ok"))["id"] == req["id"]
    # a clinician joining later also sees the pending request
    late = await h.clinician(participant="c2")
    assert (await recv_type(late, "recording.request"))["id"] == req["id"]
    await c.send(json.dumps({"type": "recording.decision", "id": req["id"], "approve": True}))
    assert await recv_type(p, "recording.decision") == {
        "type": "recording.decision", "id": req["id"], "approved": True}
    consent = await recv_type(p, "consent")
    assert consent["recording"] == "patient_allowed" and consent["monitoring"] == ["device"]
    st = await recv_type(c, "status", where=lambda m: m["consent"]["recording"] != "prohibited")
    assert st["consent"]["recording"] == "patient_allowed"
    await c.send(json.dumps({"type": "recording.decision", "id": req["id"], "approve": True}))
    assert (await recv_type(c, "error"))["code"] == "unknown_request"
    # the clinician can set the policy back
    await c.send(json.dumps({"type": "consent.set", "recording": "prohibited"}))
    assert (await recv_type(p, "consent"))["recording"] == "prohibited"
    entries = h.sidecar.store.store.entries("s1")
    kinds = [e["kind"] for e in entries]
    assert "recording_request" in kinds and "recording_decision" in kinds
    assert [e["body"]["recording"] for e in entries if e["kind"] == "consent"] == [
        "prohibited", "patient_allowed", "prohibited"]


async def test_a_policy_the_clinician_set_before_the_patient_came_stays(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    await c.send(json.dumps({"type": "consent.set", "recording": "provider_records"}))
    await recv_type(c, "ok")
    # the patient's token says "prohibited": it sets the monitoring, the clinician's later,
    # explicit policy stays (it was silently replaced before)
    p = await h.connect(token("s1", "p1", "patient",
                              {"monitoring": ["device"], "recording": "prohibited"}))
    first = await recv_json(p)
    assert (first["type"], first["monitoring"], first["recording"]) == (
        "consent", ["device"], "provider_records")


async def test_consent_set_with_monitoring_is_refused_and_changes_nothing(
        serve: Factory) -> None:
    """consent.set carries only the recording policy: one that also says ``monitoring`` (a
    clinician believing it withdraws video) was answered ``ok`` and changed nothing. It is an
    error now, in words, counted, and nothing of it is applied, its recording neither."""
    h = await serve()
    c = await h.clinician()
    p = await h.patient(consent={"monitoring": ["device", "video"], "recording": "prohibited"})
    await recv_type(c, "status")
    await c.send(json.dumps({"type": "consent.set", "recording": "provider_records",
                             "monitoring": ["device"]}))
    error = await recv_json(c)
    assert error["type"] == "error" and error["code"] == "bad_field"
    assert "patient's token" in error["message"] and "new patient token" in error["message"]
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_invalid_messages_total", {"reason": "bad_field"}) == 1
    session = h.sidecar.sessions.get("s1")
    assert session.consent.to_dict() == {"monitoring": ["device", "video"],
                                         "recording": "prohibited"}
    # the next consent the patient hears of is a later, valid change: nothing came between
    await c.send(json.dumps({"type": "consent.set", "recording": "patient_allowed",
                             "note": "a field this sidecar does not know is ignored"}))
    assert (await recv_type(c, "ok"))["ref"] == "consent.set"
    told = await recv_type(p, "consent")
    assert (told["monitoring"], told["recording"]) == (["device", "video"], "patient_allowed")
    assert [e["body"]["recording"] for e in h.sidecar.store.store.entries("s1")
            if e["kind"] == "consent"] == ["prohibited", "patient_allowed"]


async def test_out_of_scope_signals_are_acked_but_dropped(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient(consent={"monitoring": [], "recording": "prohibited"})
    st = await recv_type(c, "status")
    assert st["blind"] and "consent" in " ".join(st["reasons"])
    await p.send(signal(1))
    assert await recv_json(p) == {"type": "ack", "seq": 1}
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_signals_dropped_total", {"reason": "out_of_scope"}) == 1
    assert "signal" not in [e["kind"] for e in h.sidecar.store.store.entries("s1")]
    await p.send(json.dumps({"type": "webrtc.offer", "sdp": "v=0"}))
    assert (await recv_json(p))["code"] == "media_unavailable"


async def test_blind_status_on_disconnect_silence_and_recovery(serve: Factory) -> None:
    h = await serve(env={"SESSIONGUARD_HEARTBEAT_TIMEOUT": "0.3"})
    c = await h.clinician()
    p = await h.patient()
    assert (await recv_type(c, "status"))["blind"] is False
    silent = await recv_type(c, "status")  # no message from the patient: silent
    assert silent["blind"] and silent["participants"][0]["sdk"] == "silent"
    await p.send(signal(1, "client.heartbeat"))
    back = await recv_type(c, "status")
    assert back["blind"] is False and back["participants"][0]["sdk"] == "connected"
    await p.close()
    gone = await recv_type(c, "status", where=lambda m: m["participants"][0]["sdk"] != "silent")
    assert gone["blind"] and gone["participants"][0]["sdk"] == "disconnected"
    # the status changes are in the audit trail for the report
    statuses = [e["body"] for e in h.sidecar.store.store.entries("s1") if e["kind"] == "status"]
    assert [s["blind"] for s in statuses][:3] == [False, True, False]


async def test_bad_input_and_abuse(serve: Factory) -> None:
    h = await serve(env={"SESSIONGUARD_MAX_MESSAGE_BYTES": "2048"})
    p = await h.patient()
    cases: list[tuple[str | bytes, str]] = [("{", "bad_json"), ('{"type":"zzz"}', "unknown_type"),
                        ('{"type":"signal","seq":"x"}', "bad_field"), (b"\x00\x01", "binary"),
                        (signal(5, "client.key", {"combo": 7}), "bad_field"),
                        (signal(6, "video.frozen"), "bad_origin")]
    for frame, code in cases:
        await p.send(frame)
        err = await recv_type(p, "error")
        assert err["code"] == code and err["message"]
    reg = h.sidecar.metrics.registry
    assert reg.get_sample_value("sessionguard_invalid_messages_total", {"reason": "bad_json"}) == 1
    await p.send(json.dumps({"type": "recording.request", "reason": "x" * 4000}))
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await recv_json(p)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    # still serving everyone else
    c = await h.clinician()
    await c.send(json.dumps({"type": "resume", "after": 0}))
    assert (await recv_type(c, "ok"))["count"] == 0


async def test_flood_gets_rate_limited_then_closed(serve: Factory, tmp_path: Any) -> None:
    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"rate_per_s": 1.0, "burst": 5, "flood_close_after": 3})})
    h = await serve(config=cfg)
    p = await h.patient()
    for i in range(20):
        await p.send(signal(100 + i, "client.heartbeat"))
    codes = []
    with pytest.raises(ConnectionClosed) as info:
        while True:
            m = await recv_json(p)
            if m["type"] == "error":
                codes.append(m["code"])
    assert info.value.rcvd is not None and info.value.rcvd.code == 1008
    assert codes and set(codes) == {"rate_limited"}
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_forced_disconnects_total", {"reason": "flood"}) == 1


async def test_a_batch_costs_its_items_however_it_is_spelled(serve: Factory,
                                                               tmp_path: Any) -> None:
    """A batch costs 1 + a tenth of a token per item, counted from the parsed items: a space
    after the colon (or an escaped key) used to make it cost one token."""
    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"rate_per_s": 0.01, "burst": 12, "flood_close_after": 100})})
    h = await serve(config=cfg)
    p = await h.patient()
    for spelling in ('{"type": "signals", "items": %s}', '{"type":"signals","items":%s}'):
        items = [json.loads(signal(1000 * len(spelling) + i, "client.heartbeat"))
                 for i in range(100)]
        first = spelling % json.dumps(items)
        await p.send(first)  # 11 tokens of 12
        assert len((await recv_type(p, "ack"))["seqs"]) == 100
        await p.send(first.replace('"seq": ', '"s\\u0065q": '))  # same items, 11 more
        assert (await recv_type(p, "error"))["code"] == "rate_limited"
        h.sidecar.channels["s1"].copy().pop().tokens = 12.0  # refill for the next spelling


async def test_stuck_clinician_is_dropped_and_never_blocks_others(serve: Factory,
                                                                   tmp_path: Any) -> None:
    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"send_queue": 4, "rate_per_s": 10_000.0, "burst": 10_000})})
    h = await serve(config=cfg)
    # a clinician that completes the handshake and then never reads again
    _reader, writer = await raw_channel(h.port, token("s1", "stuck", "clinician"), rcvbuf=4096)
    good = await h.clinician(participant="good")
    p = await h.patient()
    big = {"combo": "PrintScreen", "pad": "y" * 30000}
    seen = 0
    for i in range(1, 1000):
        await p.send(signal(i, "client.key", big))
        await recv_type(p, "ack")
        seen += 1
        if h.sidecar.metrics.registry.get_sample_value(
                "sessionguard_forced_disconnects_total", {"reason": "slow_reader"}):
            break
    # more messages for the dropped channel do not count it again
    for i in range(seen + 1, seen + 21):
        await p.send(signal(i, "client.key", big))
        await recv_type(p, "ack")
        seen += 1
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_forced_disconnects_total", {"reason": "slow_reader"}) == 1
    # the good clinician got every alert, in order
    seqs = [(await recv_type(good, "alert"))["seq"] for _ in range(seen)]
    assert seqs == list(range(1, seen + 1))
    writer.close()


async def test_http_routes(serve: Factory) -> None:
    h = await serve()
    status, _, body = await aget(h.port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, headers, body = await aget(h.port, "/metrics")
    assert status == 200 and b"sessionguard_active_sessions" in body
    status, headers, body = await aget(h.port, "/sdk/sessionguard.js")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Type"].startswith("text/javascript") and b"connect" in body
    assert (await aget(h.port, "/sdk/../server.py"))[0] == 404
    assert (await aget(h.port, "/sdk/%2e%2e/server.py"))[0] == 404
    assert (await aget(h.port, "/nothing"))[0] == 404
    # the report: clinician token of that session only
    p = await h.patient()
    await p.send(signal(1))
    await recv_type(p, "ack")
    good = token("s1", "c1", "clinician")
    status, headers, body = await aget(h.port, f"/v1/sessions/s1/report?token={good}")
    assert status == 200 and json.loads(body)["session"] == "s1"
    status, headers, body = await aget(h.port, f"/v1/sessions/s1/report?token={good}&format=html")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    # its URL holds the token: never passed on as a Referer; the page can run nothing
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert (await aget(h.port, "/v1/sessions/s1/report"))[0] == 401
    patient_tok = token("s1", "p1", "patient")
    assert (await aget(h.port, f"/v1/sessions/s1/report?token={patient_tok}"))[0] == 403
    other = token("s2", "c1", "clinician")
    assert (await aget(h.port, f"/v1/sessions/s1/report?token={other}"))[0] == 403
    assert (await aget(h.port, f"/v1/sessions/s2/report?token={other}"))[0] == 404
    # odd paths are a plain 404: a name too long for the file system (was a 500), a
    # sessions path that is not a report (was 426, as if a WebSocket were expected)
    assert (await aget(h.port, "/sdk/" + "a" * 300))[0] == 404
    assert (await aget(h.port, f"/v1/sessions/s1/reports?token={good}"))[0] == 404
    assert (await aget(h.port, "/v1/sessions/"))[0] == 404
    # a session id of 100 accented letters is 600 characters percent-encoded: its report is
    # found (it answered 426 before)
    accented = "é" * 100
    pe = await h.patient(accented)
    await pe.send(signal(1))
    await recv_type(pe, "ack")
    status, _, body = await aget(
        h.port, f"/v1/sessions/{quote(accented)}/report?token={token(accented, 'c1', 'clinician')}")
    assert status == 200 and json.loads(body)["session"] == accented


async def test_graceful_shutdown_closes_with_1001(serve: Factory, tmp_path: Any) -> None:
    from monitor.server import Sidecar, running
    from tests.server.conftest import make_config
    sidecar = Sidecar(make_config(tmp_path))
    async with running(sidecar) as port:
        ws = await websockets.connect(
            f"ws://127.0.0.1:{port}/v1/ws?token={token('s1', 'p1', 'patient', DEVICE)}")
        await recv_json(ws)
        await ws.send(signal(1))
        await recv_json(ws)
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    with SqliteStore(tmp_path / "audit.db") as store:  # flushed and closed cleanly
        assert [e["kind"] for e in store.entries("s1")].count("signal") == 1


async def test_half_open_patient_is_closed_by_ping_timeout(serve: Factory, tmp_path: Any) -> None:
    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"ping_interval_s": 0.2, "ping_timeout_s": 0.3})})
    h = await serve(config=cfg)
    c = await h.clinician()
    _reader, writer = await raw_channel(h.port, token("s1", "p1", "patient", DEVICE))
    assert (await recv_type(c, "status"))["participants"][0]["sdk"] == "connected"
    # the peer never answers pings: the server closes it long before the heartbeat timeout
    gone = await recv_type(c, "status", timeout=15)
    assert gone["blind"] and gone["participants"][0]["sdk"] == "disconnected"
    writer.close()


async def test_retention_purges_old_sessions(serve: Factory, tmp_path: Any) -> None:
    with SqliteStore(tmp_path / "audit.db") as store:
        store.append("ancient", "signal", 1_000, {"signal": "client.heartbeat"})
    h = await serve()
    p = await h.patient("recent")
    await p.send(signal(1, "client.heartbeat"))
    await recv_type(p, "ack")
    # the purge ran at start, before anything queued after it in the store
    assert await h.sidecar.store.sessions() == ["recent"]
    # an empty heartbeat is liveness only: counted, not written to the ledger
    kinds = [e["kind"] for e in await h.sidecar.store.entries("recent")]
    assert "signal" not in kinds and "status" in kinds
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_signals_total", {"signal": "client.heartbeat"}) == 1


async def test_injected_clock_drives_silence_and_idle_eviction(serve: Factory) -> None:
    now = [time.time_ns() // 1_000_000]
    h = await serve(clock=lambda: now[0])
    c = await h.clinician()
    p = await h.patient()
    assert (await recv_type(c, "status"))["at"] == now[0]
    now[0] += 20_000  # the default heartbeat timeout
    await h.sidecar.tick()
    silent = await recv_type(c, "status")
    assert silent["participants"][0]["sdk"] == "silent" and silent["at"] == now[0]
    await p.send(signal(1, "client.heartbeat", at=now[0]))
    assert (await recv_type(c, "status"))["participants"][0]["sdk"] == "connected"
    await p.close()
    await c.close()
    await h.sidecar.store.sessions()  # both close handlers have run once this returns
    while h.sidecar.channels:  # (they run on the server side of the sockets)
        await asyncio.sleep(0.01)
    now[0] += 3_600_000
    await h.sidecar.tick()
    assert "s1" not in h.sidecar.sessions.sessions


async def test_a_channel_is_closed_when_its_token_expires(serve: Factory) -> None:
    now = [time.time_ns() // 1_000_000]
    h = await serve(clock=lambda: now[0])
    c = await h.clinician()
    short = await h.connect(token("s1", "c2", "clinician", ttl_s=60))
    assert (await recv_json(short))["type"] == "status"
    await h.sidecar.tick()  # within both tokens' lifetime: nothing happens
    now[0] += 61_000
    await h.sidecar.tick()  # past exp, within the handshake's 10 s leeway: still nothing
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_forced_disconnects_total", {"reason": "token_expired"}) is None
    now[0] += 10_000
    await h.sidecar.tick()
    error = await recv_type(short, "error")
    assert error["code"] == "token_expired"
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await recv_json(short)
    assert short.close_code == 1008 and short.close_reason == "token expired"
    # the clinician whose token is still valid keeps its channel
    await c.send(json.dumps({"type": "resume", "after": 0}))
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_forced_disconnects_total", {"reason": "token_expired"}) == 1
    assert c.close_code is None


async def test_alert_state_reaches_every_clinician_and_comes_back_on_resume(
        serve: Factory) -> None:
    h = await serve()
    dr = await h.clinician(participant="dr")
    sup = await h.clinician(participant="supervisor")
    p = await h.patient()
    await p.send(signal(1))
    await p.send(signal(2, "client.key", {"combo": "PrintScreen"}))
    first, second = [await recv_type(dr, "alert") for _ in range(2)]
    await recv_type(sup, "alert", where=lambda m: m["seq"] == 2)

    await dr.send(json.dumps({"type": "alert.ack", "id": first["id"]}))
    assert (await recv_type(dr, "ok"))["ref"] == "alert.ack"
    for c in (dr, sup):
        state = await recv_type(c, "alert.state")
        assert state == {"type": "alert.state", "id": first["id"], "seq": 1,
                         "acknowledged_by": ["dr"], "feedback": None, "at": state["at"]}
    await dr.send(json.dumps({"type": "alert.feedback", "id": first["id"],
                              "verdict": "false_positive"}))
    for c in (dr, sup):
        state = await recv_type(c, "alert.state")
        assert (state["id"], state["acknowledged_by"], state["feedback"]) == (
            first["id"], ["dr"], "false_positive")
    # the supervisor acks too: listed once each, whoever acks twice
    await sup.send(json.dumps({"type": "alert.ack", "id": first["id"]}))
    await dr.send(json.dumps({"type": "alert.ack", "id": first["id"]}))
    await recv_type(dr, "alert.state", where=lambda m: m["acknowledged_by"] == ["dr", "supervisor"])
    last = await recv_type(sup, "alert.state", where=lambda m: len(m["acknowledged_by"]) == 2)
    last = await recv_type(sup, "alert.state")  # the second ack by dr changes nothing
    assert last["acknowledged_by"] == ["dr", "supervisor"] and last["feedback"] == "false_positive"

    # a clinician joining later (or a reloaded panel) gets the alerts, then their state
    late = await h.clinician(participant="late")
    await late.send(json.dumps({"type": "resume", "after": 0}))
    replay = []
    while (m := await recv_json(late))["type"] != "ok":
        if m["type"] in ("alert", "alert.state"):
            replay.append((m["type"], m["id"]))
    assert m["count"] == 2
    assert replay == [("alert", first["id"]), ("alert", second["id"]),
                      ("alert.state", first["id"])]
    # the state comes back even for alerts at or below "after" (the panel has them already)
    await late.send(json.dumps({"type": "resume", "after": 2}))
    state = await recv_type(late, "alert.state")
    assert (state["id"], state["seq"], state["acknowledged_by"], state["feedback"]) == (
        first["id"], 1, ["dr", "supervisor"], "false_positive")
    assert (await recv_json(late))["count"] == 0


async def test_resume_sends_each_alert_once_and_live_alerts_after_the_stored_ones(
        serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    for seq in (1, 2, 3):
        await p.send(signal(seq, "client.key", {"combo": "PrintScreen", "n": seq}))
        await recv_type(p, "ack")
    live = [(await recv_type(c, "alert"))["seq"] for _ in range(3)]
    assert live == [1, 2, 3]
    # a panel that got alerts live and then resumes from what it had stored (nothing): the
    # alerts it already has are not sent again
    await c.send(json.dumps({"type": "resume", "after": 0}))
    ok = await recv_type(c, "ok", where=lambda m: m["ref"] == "resume")
    assert ok["count"] == 0

    # a later panel resumes while an alert is raised: the store has been read (gated
    # here), the new alert is held and follows the stored ones, once
    store = h.sidecar.store
    original, gate, read = store.alerts_after, asyncio.Event(), asyncio.Event()

    async def gated(session: str, after: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await original(session, after)
        read.set()
        await gate.wait()
        return result

    store.alerts_after = gated
    late = await h.clinician(participant="late")
    await late.send(json.dumps({"type": "resume", "after": 0}))
    await read.wait()
    await p.send(signal(4, "client.key", {"combo": "PrintScreen", "n": 4}))
    assert (await recv_type(c, "alert"))["seq"] == 4  # live, while the resume waits
    gate.set()
    got = []
    while (m := await recv_json(late))["type"] != "ok":
        if m["type"] == "alert":
            got.append(m["seq"])
    assert got == [1, 2, 3, 4] and m["count"] == 4


async def test_a_resume_longer_than_the_send_queue_is_paced(serve: Factory,
                                                             tmp_path: Any) -> None:
    """A backlog of alerts and states longer than the send queue reaches a clinician who
    reads it (the resume waits for room) instead of closing the channel 1013 every time."""
    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"send_queue": 4, "rate_per_s": 10_000.0, "burst": 10_000})})
    h = await serve(config=cfg)
    p = await h.patient()
    for seq in range(1, 21):
        await p.send(signal(seq, "client.key", {"combo": "PrintScreen", "n": seq}))
        await recv_type(p, "ack")
    c = await h.clinician()
    await c.send(json.dumps({"type": "resume", "after": 0}))
    alerts = []
    while (m := await recv_json(c))["type"] != "ok":
        if m["type"] == "alert":
            alerts.append(m)
    assert [a["seq"] for a in alerts] == list(range(1, 21)) and m["count"] == 20
    for a in alerts[:12]:
        await c.send(json.dumps({"type": "alert.ack", "id": a["id"]}))
        await recv_type(c, "alert.state")
    late = await h.clinician(participant="late")
    await late.send(json.dumps({"type": "resume", "after": 20}))
    states = []
    while (m := await recv_json(late))["type"] != "ok":
        states.append(m["type"])
    assert states.count("alert.state") == 12
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_forced_disconnects_total", {"reason": "slow_reader"}) is None


async def test_a_patient_has_one_recording_request_waiting_at_a_time(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient(consent={"monitoring": ["device"], "recording": "prohibited"})
    await recv_type(c, "status")
    for _ in range(5):
        await p.send(json.dumps({"type": "recording.request", "reason": "please"}))
    oks = [await recv_type(p, "ok") for _ in range(5)]
    first = oks[0]["id"]
    assert [o["id"] for o in oks] == [first] * 5
    assert [o.get("pending") for o in oks] == [None] + [True] * 4
    # a clinician joining later gets the one request, then whatever comes next (a status)
    late = await h.clinician(participant="late")
    assert (await recv_type(late, "recording.request"))["id"] == first
    await p.send(signal(1, "client.focus", {"focused": False}))
    await recv_type(p, "ack")
    await c.send(json.dumps({"type": "recording.decision", "id": first, "approve": False}))
    await recv_type(p, "recording.decision")
    # decided: the next request is a new one
    await p.send(json.dumps({"type": "recording.request", "reason": "please, again"}))
    again = await recv_type(p, "ok")
    assert again["id"] != first and "pending" not in again
    kinds = [e["kind"] for e in h.sidecar.store.store.entries("s1")]
    assert kinds.count("recording_request") == 2


async def test_a_store_that_cannot_write_refuses_a_channel_in_words_and_loses_nothing(
        serve: Factory) -> None:
    """The audit store locked or full while a patient connects: the patient is told and the
    channel closed 1013 (it was a traceback and 1011); once the store works again the
    reconnect records the consent the failed attempt could not."""
    from signals.errors import StorageError

    h = await serve()
    store = h.sidecar.store
    original, broken = store.append, [True]

    async def append(*args: Any, **kwargs: Any) -> Any:
        if broken[0]:
            raise StorageError("database is locked")
        return await original(*args, **kwargs)

    store.append = append
    p = await h.connect(token("s1", "p1", "patient", DEVICE))
    error = await recv_type(p, "error")
    assert error["code"] == "unavailable"
    with pytest.raises(ConnectionClosed):
        while True:
            await recv_json(p)
    assert p.close_code == 1013
    broken[0] = False
    again = await h.patient()
    await again.send(signal(1, "client.key", {"combo": "PrintScreen"}))
    assert (await recv_type(again, "ack"))["seq"] == 1
    kinds = [e["kind"] for e in h.sidecar.store.store.entries("s1")]
    assert "consent" in kinds and "signal" in kinds


async def test_an_alert_the_store_refused_is_kept_and_delivered_once_it_is_stored(
        serve: Factory) -> None:
    """The engine has spent an alert (its cooldown runs) when the store refuses it: it was
    lost, and a resent signal could not bring it back. Now it waits in memory, in order with
    later ones, and the next tick that can store it delivers it."""
    from signals.errors import StorageError

    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await recv_type(c, "status")
    store = h.sidecar.store
    original, broken = store.append_alert, [True]

    async def append_alert(*args: Any, **kwargs: Any) -> Any:
        if broken[0]:
            raise StorageError("database is locked")
        return await original(*args, **kwargs)

    store.append_alert = append_alert
    await p.send(signal(1))
    assert (await recv_json(p)) == {"type": "ack", "seq": 1}
    await p.send(signal(2, "client.key", {"combo": "PrintScreen"}))
    assert (await recv_json(p)) == {"type": "ack", "seq": 2}
    await h.sidecar.tick()  # still refused: nothing is sent before it is stored
    assert h.sidecar.store.store.alerts_after("s1", 0) == []
    broken[0] = False
    await h.sidecar.tick()
    first, second = await recv_type(c, "alert"), await recv_type(c, "alert")
    assert [(a["rule"], a["seq"]) for a in (first, second)] == [
        ("test.recorder", 1), ("test.key", 2)]
    assert [a["seq"] for a in h.sidecar.store.store.alerts_after("s1", 0)] == [1, 2]


async def test_alerts_queued_for_webhooks_all_since_removed_are_abandoned_on_the_record(
        serve: Factory, tmp_path: Any) -> None:
    """Every webhook URL removed from the configuration: what was queued for them is given
    up on the record at start (as when one URL changes), not left queued without a word."""
    with SqliteStore(tmp_path / "audit.db") as db:
        db.append_alert("s1", {"id": "a1", "rule": "r", "severity": "critical",
                               "session": "s1", "participant": "p1", "at": 1},
                        ["https://hooks.example/in?key=s3cret"])
    h = await serve()  # no webhook URLs configured
    rows = h.sidecar.store.store.outbox("s1")
    assert len(rows) == 1 and rows[0]["abandoned_at"] is not None
    entries = [e["body"] for e in h.sidecar.store.store.entries("s1") if e["kind"] == "delivery"]
    assert entries and entries[0]["error"] == "the webhook URL is no longer configured"
    assert "s3cret" not in json.dumps(entries)


async def _break_store(h: Any) -> list[bool]:
    """Make the audit store refuse every write (as a database locked past its busy timeout
    does) while the returned flag holds ``True``; the writes already queued go first."""
    import sqlite3

    await h.sidecar.store.entries("s1")  # a read runs after every write queued before it
    db = h.sidecar.store.store
    broken = [True]
    for name in ("write_many", "append", "append_alert"):
        original = getattr(db, name)

        def refusing(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            if broken[0]:
                raise sqlite3.OperationalError("database is locked")
            return _original(*args, **kwargs)

        setattr(db, name, refusing)
    return broken


async def _call_with_a_refusing_store(serve: Factory) -> tuple[Any, Any, Any, list[bool]]:
    """A sidecar, a clinician and a patient (connected and recorded), then a store that
    refuses every write while the returned flag holds ``True``."""
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await recv_type(c, "status")
    return h, c, p, await _break_store(h)


def _ledger(h: Any) -> list[tuple[str, str]]:
    """Session s1's signal and alert entries as (kind, signal name or rule), in order."""
    return [(e["kind"], e["body"].get("signal", e["body"].get("rule")))
            for e in h.sidecar.store.store.entries("s1", ("signal", "alert"))]


async def test_a_signal_the_store_refused_is_kept_and_recorded_before_its_alert(
        serve: Factory) -> None:
    """A signal whose ledger entry the store refused was processed (its alert raised) but
    never recorded: the patient got an `internal` error, the resend was acknowledged as a
    duplicate, and the ledger missed it for good. Now the sidecar keeps the entry and records
    it, before the alert it caused, at the next tick that can; the patient gets its ack."""
    h, c, p, broken = await _call_with_a_refusing_store(serve)
    await p.send(signal(1))
    assert (await recv_json(p)) == {"type": "ack", "seq": 1}
    await h.sidecar.tick()  # still refused
    assert [e["kind"] for e in h.sidecar.store.store.entries("s1")].count("signal") == 0
    broken[0] = False
    await h.sidecar.tick()
    alert = await recv_type(c, "alert")
    assert (alert["rule"], alert["seq"]) == ("test.recorder", 1)
    assert _ledger(h) == [("signal", "client.media_recorder"), ("alert", "test.recorder")]
    assert h.sidecar.store.store.verify("s1").ok


async def test_what_the_store_refused_gets_a_last_try_at_shutdown(
        serve: Factory, tmp_path: Any) -> None:
    """A SIGTERM before the next tick: what waits for the store is stored on the way out
    (with the ticker gone it was left behind)."""
    h, _c, p, broken = await _call_with_a_refusing_store(serve)
    await p.send(signal(1))
    assert (await recv_json(p)) == {"type": "ack", "seq": 1}
    broken[0] = False
    await h.sidecar.stop()
    with SqliteStore(h.sidecar.config.store.db) as db:
        kinds = [e["kind"] for e in db.entries("s1", ("signal", "alert"))]
    assert kinds == ["signal", "alert"]


async def test_derived_signals_the_store_refused_do_not_take_their_alerts_with_them(
        serve: Factory) -> None:
    """The entries an outcome adds (a virtual device derived from a device list) failing to
    store made the whole outcome raise: its alerts were neither stored nor kept. Now every
    entry waits in order and is recorded once the store works again."""
    h, _c, p, broken = await _call_with_a_refusing_store(serve)
    devices = {"change": "initial", "devices": [{"kind": "audioinput",
                                                 "label": "BlackHole 2ch",
                                                 "id": "x"}]}
    await p.send(signal(1, "client.devices", devices))
    assert (await recv_json(p)) == {"type": "ack", "seq": 1}
    await p.send(signal(2, "client.key", {"combo": "PrintScreen"}))
    assert (await recv_json(p)) == {"type": "ack", "seq": 2}
    broken[0] = False
    await h.sidecar.tick()
    assert _ledger(h) == [
        ("signal", "client.devices"), ("signal", "client.virtual_device"),
        ("signal", "client.key"), ("alert", "test.key")]


async def test_a_resume_whose_store_read_fails_still_passes_on_live_alerts(
        serve: Factory) -> None:
    from signals.errors import StorageError

    h = await serve()
    p = await h.patient()
    c = await h.clinician()
    gate, read = asyncio.Event(), asyncio.Event()

    async def failing(session: str, after: int) -> list[dict[str, Any]]:
        read.set()
        await gate.wait()
        raise StorageError("database is locked")

    h.sidecar.store.alerts_after = failing
    await c.send(json.dumps({"type": "resume", "after": 0}))
    await read.wait()
    await p.send(signal(1))  # raised while the resume waits: held for after it
    await recv_type(p, "ack")
    gate.set()
    assert (await recv_type(c, "alert"))["seq"] == 1  # not lost with the failed resume
    assert (await recv_type(c, "error"))["code"] == "internal"


async def test_a_patient_back_after_a_blip_learns_the_decision_of_its_request(
        serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await p.send(json.dumps({"type": "recording.request", "reason": "review"}))
    rid = (await recv_type(p, "ok"))["id"]
    await recv_type(c, "recording.request")
    await p.close()                      # the patient's network blips ...
    await c.send(json.dumps({"type": "recording.decision", "id": rid, "approve": False}))
    await recv_type(c, "recording.decision")
    p = await h.patient()                # ... and the page asks again with the id it got
    await p.send(json.dumps({"type": "recording.request", "reason": "review", "id": rid}))
    assert await recv_type(p, "recording.decision") == {
        "type": "recording.decision", "id": rid, "approved": False}
    # another patient of the session presenting that id learns nothing: a request of its own
    other = await h.patient(participant="p2")
    await other.send(json.dumps({"type": "recording.request", "reason": "mine", "id": rid}))
    assert (await recv_type(other, "ok"))["id"] != rid
    new = await recv_type(c, "recording.request")
    assert new["participant"] == "p2"
    # the clinicians were asked once for p1's request
    entries = h.sidecar.store.store.entries("s1")
    assert sum(e["kind"] == "recording_request" for e in entries) == 2


async def test_a_page_that_named_its_request_learns_the_decision_even_without_the_ok(
        serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await p.send(json.dumps({"type": "recording.request", "reason": "review",
                             "id": "rr-0123456789ab"}))
    assert (await recv_type(c, "recording.request"))["id"] == "rr-0123456789ab"
    await p.close()                      # gone before its "ok" could matter
    await c.send(json.dumps({"type": "recording.decision", "id": "rr-0123456789ab",
                             "approve": True}))
    await recv_type(c, "recording.decision")
    p = await h.patient()
    await p.send(json.dumps({"type": "recording.request", "reason": "review",
                             "id": "rr-0123456789ab"}))
    assert (await recv_type(p, "recording.decision"))["approved"] is True
    # an id already in use, or not a plain token, is replaced by the sidecar's own
    for n, bad in enumerate(("rr-0123456789ab", "<b>x</b>-very-bad"), start=2):
        q = await h.patient(participant=f"p{n}")
        await q.send(json.dumps({"type": "recording.request", "reason": "x", "id": bad}))
        ok = await recv_type(q, "ok")
        assert ok["id"] != bad and ok["id"].startswith("rr-") and "pending" not in ok


AUDIO_VIDEO = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}


async def test_consented_media_that_never_arrives_makes_the_session_blind_in_words(
        serve: Factory) -> None:
    """The consent covers camera and microphone, but the patient's app sends no media: after
    media.expect_within_s (30 s) the clinician is told, once; media arriving lifts it."""
    now = [time.time_ns() // 1_000_000]
    h = await serve(env={"SESSIONGUARD_MEDIA_ENABLED": "true"}, clock=lambda: now[0],
                    media_factory=lambda *a: None)
    c = await h.clinician()
    p = await h.patient(consent=AUDIO_VIDEO)
    first = await recv_type(c, "status", where=lambda m: m["participants"])
    assert not first["blind"], first["reasons"]  # not yet: the page may attach media soon
    now[0] += 29_000
    await p.send(signal(1, "client.heartbeat", at=now[0]))
    await recv_type(p, "ack")
    await h.sidecar.tick()
    now[0] += 1_000
    await p.send(signal(2, "client.heartbeat", at=now[0]))
    await h.sidecar.tick()
    late = await recv_type(c, "status", where=lambda m: m["blind"])
    assert late["reasons"] == [
        f"no {kind} has arrived from patient p1, although the consent covers it (the "
        "patient's app has not sent it: not attached, or no permission)"
        for kind in ("audio", "video")]
    await h.sidecar.media_status("s1", "p1", "audio", "flowing")
    await h.sidecar.media_status("s1", "p1", "video", "flowing")
    back = await recv_type(c, "status", where=lambda m: not m["blind"])
    assert back["reasons"] == []


async def test_a_sidecar_without_media_analysis_says_consented_media_is_not_watched(
        serve: Factory) -> None:
    h = await serve(env={"SESSIONGUARD_MEDIA_ENABLED": "false"})
    c = await h.clinician()
    p = await h.patient(consent=AUDIO_VIDEO)
    status = await recv_type(c, "status", where=lambda m: m["participants"])
    assert status["blind"] and status["reasons"] == [
        "this sidecar does not analyse camera or microphone (media analysis is turned off): "
        "the consented audio and video are not watched"]
    await p.send(json.dumps({"type": "webrtc.offer", "sdp": "v=0"}))
    assert (await recv_type(p, "error"))["code"] == "media_unavailable"
    # device-only consent on the same sidecar: nothing it should see is missed
    d = await h.patient(session="s2", consent=DEVICE)
    c2 = await h.connect(token("s2", "c1", "clinician"))
    assert (await recv_type(c2, "status"))["blind"] is False
    await d.close()


async def test_a_signal_that_can_never_be_stored_is_said_with_its_seq_and_acked(
        serve: Factory) -> None:
    """A wrong envelope (``at`` as text, ``data`` that is no object) with a usable seq: an
    error carrying the seq, and an ack (resending cannot help). In a batch it does not sink
    the other items: they are stored, and every usable seq is acknowledged."""
    h = await serve()
    p = await h.patient()
    now = int(time.time() * 1000)
    await p.send(json.dumps({"type": "signal", "seq": 1, "signal": "client.key",
                             "at": "soon", "data": {"combo": "PrintScreen"}}))
    err = await recv_type(p, "error")
    assert err["code"] == "bad_field" and err["seq"] == 1 and "at" in err["message"]
    assert await recv_type(p, "ack") == {"type": "ack", "seq": 1}
    good = {"type": "signal", "signal": "client.media_recorder", "at": now, "data": {}}
    await p.send(json.dumps({"type": "signals", "items": [
        {**good, "seq": 2}, {**good, "seq": 3, "data": [1]},
        {**good, "seq": "four"}, {**good, "seq": 5, "at": now + 1}]}))
    errors = [await recv_type(p, "error") for _ in range(2)]
    assert [e.get("seq") for e in errors] == [3, None]
    assert all(e["code"] == "bad_field" for e in errors)
    ack = await recv_type(p, "ack")
    assert sorted(ack["seqs"]) == [2, 3, 5]
    stored = [e["body"] for e in h.sidecar.store.store.entries("s1") if e["kind"] == "signal"]
    assert sorted(b["seq"] for b in stored) == [2, 5]


async def test_a_batch_is_stored_and_fed_in_its_order_with_each_alert_after_its_signal(
        serve: Factory) -> None:
    """A batch's items are processed together (they share group commits), yet the ledger
    and the engine see them in batch order, each alert right after the signal that raised
    it, and the clinician gets the alerts in that order."""
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    now = int(time.time() * 1000)
    items = [{"type": "signal", "seq": k, "at": now + k,
              **({"signal": "client.key", "data": {"combo": "PrintScreen"}} if k % 3 == 0
                 else {"signal": "client.focus", "data": {"focused": k % 2 == 0}})}
             for k in range(1, 61)]
    await p.send(json.dumps({"type": "signals", "items": items}))
    assert (await recv_type(p, "ack"))["seqs"] == list(range(1, 61))
    alerts = [await recv_type(c, "alert") for _ in range(20)]
    assert [a["evidence"][0]["at"] - now for a in alerts] == list(range(3, 61, 3))
    entries = [e for e in h.sidecar.store.store.entries("s1") if e["kind"] in ("signal", "alert")]
    order = [(e["kind"], e["body"]["seq"] if e["kind"] == "signal"
              else e["body"]["evidence"][0]["at"] - now) for e in entries]
    want: list[tuple[str, int]] = []
    for k in range(1, 61):
        want.append(("signal", k))
        if k % 3 == 0:
            want.append(("alert", k))
    assert order == want


async def test_one_sessions_channels_are_capped_and_others_are_not_affected(
        serve: Factory, tmp_path: Any) -> None:
    """A page reconnecting in a loop, or a leaked token, must not take the process's memory
    and descriptors from every other session: a session holds at most
    ``limits.max_channels_per_session`` channels at once (every role)."""
    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"max_channels_per_session": 3})})
    h = await serve(config=cfg)
    c = await h.clinician()
    p1 = await h.patient(participant="p1")
    await h.patient(participant="p2")
    await h.patient(participant="p2")  # a second tab
    with pytest.raises(websockets.InvalidStatus) as info:
        await h.connect(token("s1", "p3", "patient", DEVICE))
    assert info.value.response.status_code == 429
    assert b"max_channels_per_session" in info.value.response.body
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_handshakes_refused_total", {"status": "429"}) == 1
    await h.clinician(participant="c2")  # patients never lock the clinicians out
    await h.patient(session="s2")  # another session is not affected
    await p1.close()
    await recv_type(c, "status", where=lambda m: not any(
        p["participant"] == "p1" and p["sdk"] != "disconnected" for p in m["participants"]))
    await h.patient(participant="p3")  # room again once one closed


async def test_a_handshake_that_is_not_an_upgrade_gives_its_place_back(
        serve: Factory, tmp_path: Any) -> None:
    """A GET of /v1/ws with a valid token but no WebSocket upgrade is answered by websockets
    (400), and the place it took under the channel limit is free again at once, not when the
    garbage collector happens to collect its connection."""
    import gc

    from tests.server.conftest import make_config
    cfg = make_config(tmp_path)
    cfg = cfg.model_copy(update={"limits": cfg.limits.model_copy(
        update={"max_channels_per_session": 2})})
    h = await serve(config=cfg)
    tok = token("s1", "p1", "patient", DEVICE)
    gc.disable()  # the connections' cycles stay until a collection: the test must not wait
    try:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
            writer.write(f"GET /v1/ws?token={tok} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status = await reader.readline()
            assert b" 400 " in status or b" 426 " in status, status
            writer.close()
            await writer.wait_closed()
        await h.patient()  # the limit counts channels, not refused handshakes
        await h.patient()
    finally:
        gc.enable()
