"""The Python reference client (a native app's protocol) against the real sidecar."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import serve

from monitor.reference_client import (
    MAX_SIGNAL_BYTES,
    ClientError,
    Outbox,
    Pacer,
    ReferenceClient,
    SignalTooLarge,
    backoff_delay,
)
from monitor.tokens import mint
from tests.browser.harness import live_sidecar, recv_until, stored_signals

CONSENT = {"monitoring": ["device"], "recording": "prohibited"}


def test_outbox_numbers_keeps_and_drops_oldest_with_a_count() -> None:
    box = Outbox(limit=3, start=100)
    seqs = [box.add("os.screenshot", {"api": "x"}, 1)["seq"] for _ in range(5)]
    assert seqs == [101, 102, 103, 104, 105]
    assert list(box.unacked) == [103, 104, 105] and box.dropped == 2
    beat = box.add("client.heartbeat", {}, 2)
    assert beat["data"] == {"dropped": 2} and box.dropped == 1   # 103 dropped to make room
    assert box.ack(104) and not box.ack(104) and not box.ack("104")
    batches = Outbox(limit=120, start=0)
    for _ in range(120):
        batches.add("client.heartbeat", {}, 0)
    sizes = [len(m["items"]) for m in batches.resend(batch=50)]
    assert sizes == [50, 50, 20]
    with pytest.raises(ValueError):
        Outbox(limit=0)


def test_backoff_grows_caps_and_jitters() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(a, rng, low=1.0, high=8.0) for a in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(8.0, 2.0 ** (attempt + 1))
        assert ceiling / 2 <= delay <= ceiling
    first = [backoff_delay(0, rng) for _ in range(200)]      # docs/native.md: 0.25-0.5 s
    assert 0.25 <= min(first) < 0.3 and 0.45 < max(first) <= 0.5
    assert 7.5 <= backoff_delay(20, rng) <= 15.0
    assert len({round(d, 6) for d in delays[4:]}) == 4   # jittered, not lockstep


async def test_native_app_signals_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "native.db"
    async with live_sidecar(db) as first:
        port, url = first.port, first.ws_url
        token = first.token("s-native", "ios-1", "patient", CONSENT)
        client = ReferenceClient(url, token, rng=random.Random(3))
        async with first.clinician("s-native") as clinician:
            await recv_until(clinician, lambda m: m["type"] == "status")
            await client.start()
            await client.wait_for(lambda: client.consent is not None)
            assert client.consent == CONSENT
            await client.signal("os.screen_capture", {"active": True, "api": "UIScreen.isCaptured"})
            alert = await recv_until(clinician, lambda m: m["type"] == "alert")
            assert alert["evidence"][0]["signal"] == "os.screen_capture"
            await client.drained()
    await client.wait_for(lambda: not client.connected)
    down = [await client.signal("os.screenshot", {"api": "userDidTakeScreenshotNotification"})
            for _ in range(3)]
    assert set(down) <= set(client.outbox.unacked)
    try:
        async with live_sidecar(db, port=port):
            await client.drained(timeout=20)
    finally:
        await client.close()
    stored = stored_signals(db, "s-native")
    assert [s["signal"] for s in stored] == ["os.screen_capture"] + ["os.screenshot"] * 3
    assert [s["seq"] for s in stored][1:] == down
    assert all(s["source"] == "os" for s in stored)
    assert client.connects == 2


async def test_recording_request_round_trip_and_refused_token(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "rec.db") as sc:
        token = sc.token("s-rr", "android-1", "patient", CONSENT)
        async with ReferenceClient(sc.ws_url, token) as client, \
                sc.clinician("s-rr") as clinician:
            await recv_until(clinician, lambda m: m["type"] == "status")
            pending = asyncio.create_task(client.request_recording("for my notes"))
            request = await recv_until(clinician, lambda m: m["type"] == "recording.request")
            assert request["reason"] == "for my notes" and request["participant"] == "android-1"
            await clinician.send(json.dumps({"type": "recording.decision", "id": request["id"],
                                             "approve": False}))
            assert await pending == {"id": request["id"], "approved": False}


async def test_heartbeats_go_out_while_connected(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "beat.db") as sc:
        token = sc.token("s-beat", "ios-1", "patient", CONSENT)
        async with ReferenceClient(sc.ws_url, token, seq_start=0, heartbeat_s=0.1) as client:
            # two heartbeats numbered, sent and acknowledged without any app signal
            await client.wait_for(lambda: client.outbox.seq >= 2 and not client.outbox.unacked,
                                  timeout=3)
        beats = [m for m in client.received if m.get("type") == "ack"]
        assert {m.get("seq") for m in beats} >= {1, 2}


async def test_signals_outside_the_consent_are_counted_not_sent(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "scope.db") as sc:
        token = sc.token("s-scope", "ios-1", "patient",
                         {"monitoring": ["audio"], "recording": "prohibited"})
        client = ReferenceClient(sc.ws_url, token, seq_start=0, heartbeat_s=0.1)
        early = await client.signal("os.screenshot", {"api": "x"})   # before any consent
        assert early == 1
        try:
            await client.start()
            await client.wait_for(lambda: client.consent is not None)
            assert await client.signal("os.screen_capture", {"active": True, "api": "a"}) is None
            assert client.out_of_scope == 2 and 1 not in client.outbox.unacked
            beat = client.outbox.seq + 1        # the heartbeat needs no scope
            await client.wait_for(lambda: client.outbox.seq >= beat and not client.outbox.unacked,
                                  timeout=3)
        finally:
            await client.close()
        acked = {m.get("seq") for m in client.received if m.get("type") == "ack"}
        assert beat in acked and 1 not in acked
        assert stored_signals(tmp_path / "scope.db", "s-scope") == []


async def test_a_refused_token_stops_the_client_or_is_renewed_once(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "auth.db") as sc:
        forged = sc.token("s-auth", "android-1", "patient", CONSENT)[:-4] + "AAAA"
        refused = ReferenceClient(sc.ws_url, forged, rng=random.Random(5))
        with pytest.raises(ClientError):
            await refused.start(timeout=5.0)   # at once, not after the timeout
        assert refused.refused and refused.connects == 0 and "401" in (refused.last_error or "")
        await refused.close()

        # a token whose exp (plus the sidecar's 10 s leeway) passes in about a second:
        # closed with token_expired (1008), then refused at the next handshake
        expiring = mint(sc.secret, "s-auth", "android-1", "patient", 1, CONSENT,
                        now=int(time.time() - 10) * 1000)
        fresh = sc.token("s-auth", "android-1", "patient", CONSENT)
        asked: list[str] = []

        async def get_token() -> str:
            asked.append(fresh)
            return fresh

        renewing = ReferenceClient(sc.ws_url, expiring, get_token=get_token)
        stopping = ReferenceClient(sc.ws_url, expiring)
        try:
            await renewing.start()
            await stopping.start()
            await renewing.wait_for(lambda: renewing.connects == 2, timeout=8)
            with pytest.raises(ClientError):
                await stopping.wait_for(lambda: False, timeout=8)
        finally:
            await renewing.close()
            await stopping.close()
        assert asked == [fresh] and not renewing.refused
        assert stopping.refused and stopping.connects == 1
        assert any(m.get("code") == "token_expired" for m in stopping.received)


def test_resend_frames_are_bounded_by_size_as_well_as_count() -> None:
    box = Outbox(start=0)
    devices = [{"kind": "videoinput", "label": "USB Camera " + "x" * 200, "id": f"{i:064x}"}
               for i in range(20)]
    for _ in range(15):
        box.add("client.devices", {"change": "added", "devices": devices}, 0)
    frames = box.resend()
    assert [i["seq"] for f in frames for i in f["items"]] == list(range(1, 16))
    assert all(len(json.dumps(f)) < 17_000 for f in frames) and len(frames) > 1


async def test_large_resend_is_delivered_and_backoff_resets_on_an_ack(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "big.db") as sc:
        token = sc.token("s-big", "ios-1", "patient", CONSENT)
        async with ReferenceClient(sc.ws_url, token) as client:
            await client.wait_for(lambda: client.consent is not None)
            assert client._ws is not None
            await client._ws.close()                  # an outage: 15 signals of ~6.5 KB wait
            await client.wait_for(lambda: not client.connected)
            devices = [{"kind": "videoinput", "label": "USB Camera " + "x" * 200,
                        "id": f"{i:064x}"} for i in range(20)]
            for _ in range(15):
                await client.signal("client.devices", {"change": "added", "devices": devices})
            await client.drained(timeout=5)           # unbounded, one ~98 KB frame got 1009
            assert client.connects == 2 and client.attempt == 0


async def test_backoff_keeps_growing_while_connections_get_no_ack() -> None:
    async def hang_up(ws: Any) -> None:
        await ws.close()

    async with serve(hang_up, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        client = ReferenceClient(f"ws://127.0.0.1:{port}/v1/ws", "t", rng=random.Random(2))
        try:
            await client.start()
            await client.wait_for(lambda: client.connects >= 3, timeout=5)
            assert client.attempt >= 2      # not reset by each connect
        finally:
            await client.close()


async def test_recording_requests_are_named_asked_again_and_resolved_by_id(
        tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "rr2.db") as sc:
        token = sc.token("s-rr2", "ios-1", "patient", CONSENT)
        async with ReferenceClient(sc.ws_url, token) as client, \
                sc.clinician("s-rr2") as clinician:
            await recv_until(clinician, lambda m: m["type"] == "status")
            first = asyncio.create_task(client.request_recording("one", timeout=5))
            second = asyncio.create_task(client.request_recording("two", timeout=5))
            request = await recv_until(clinician, lambda m: m["type"] == "recording.request")
            assert re.fullmatch(r"rr-[0-9a-f]{12}", request["id"])   # the client's own id
            await client.wait_for(lambda: sum(m.get("ref") == "recording.request"
                                              for m in client.received) == 2)
            assert client._ws is not None
            await client._ws.close()       # decided while the app is away: it asks again
            await client.wait_for(lambda: not client.connected)
            await recv_until(clinician, lambda m: m["type"] == "status" and any(
                p["sdk"] == "disconnected" for p in m["participants"]))
            await clinician.send(json.dumps({"type": "recording.decision", "id": request["id"],
                                             "approve": True}))
            await recv_until(clinician, lambda m: m["type"] == "recording.decision")
            # decided while no channel of the app was open (its first reconnect waits at least
            # 0.25 s): the app can learn it only by asking again with the request's id
            assert not client.connected
            decided = {"id": request["id"], "approved": True}
            assert await first == decided and await second == decided   # one waiting request
            assert client.connects == 2


# 64 devices whose labels are 256 control characters (each written as \u0007 in JSON): a
# client.devices signal of about 100 KB, over any frame the sidecar accepts
HUGE = {"change": "initial", "devices": [
    {"kind": "audioinput", "label": "\u0007" * 256, "id": f"{i:064x}"} for i in range(64)]}


def test_a_signal_too_large_for_any_frame_is_never_queued_but_counted() -> None:
    box = Outbox(start=10)
    with pytest.raises(SignalTooLarge, match=r"client\.devices signal of"):
        box.add("client.devices", HUGE, 0)
    assert not box.unacked and box.dropped == 1 and box.seq == 10
    assert box.add("client.heartbeat", {}, 0)["data"] == {"dropped": 1}
    at_limit = {"change": "initial", "devices": [{"kind": "audioinput", "label": "", "id": ""}]}
    room = MAX_SIGNAL_BYTES - len(json.dumps(
        {"type": "signal", "seq": 12, "signal": "client.devices", "at": 0, "data": at_limit}))
    at_limit["devices"][0]["label"] = "x" * room       # exactly the limit: kept
    assert box.add("client.devices", at_limit, 0)["seq"] == 12


async def test_a_signal_too_large_to_deliver_is_dropped_and_reported(tmp_path: Path) -> None:
    db = tmp_path / "huge.db"
    async with live_sidecar(db) as sc:
        token = sc.token("s-huge", "ios-1", "patient", CONSENT)
        async with ReferenceClient(sc.ws_url, token, heartbeat_s=0.2) as client:
            await client.wait_for(lambda: client.consent is not None)
            assert await client.signal("client.devices", HUGE) is None
            assert client.too_large == 1 and "\u0007" not in (client.last_error or "")
            assert "signal_too_large" in (client.last_error or "")
            shot = await client.signal("os.screenshot", {"api": "x"})
            await client.drained()
            await client.wait_for(lambda: any(
                s["signal"] == "client.heartbeat" and s["data"].get("dropped") == 1
                for s in stored_signals(db, "s-huge")) or client.connects > 1, timeout=5)
            assert client.connects == 1                     # never closed with 1009
    stored = stored_signals(db, "s-huge")
    assert shot in [s["seq"] for s in stored if s["signal"] == "os.screenshot"]


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:8750/v1/ws", "ws://[::1/v1/ws",
                                 "ws:///v1/ws", "ws://127.0.0.1:8750/v1/ws#call",
                                 "127.0.0.1:8750/v1/ws"])
def test_a_url_that_cannot_work_is_refused_at_construction(url: str) -> None:
    with pytest.raises(ValueError, match="not a usable WebSocket url"):
        ReferenceClient(url, "t")


async def test_an_http_url_means_ws(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "http.db") as sc:
        token = sc.token("s-http", "ios-1", "patient", CONSENT)
        url = sc.ws_url.replace("ws://", "http://", 1)
        async with ReferenceClient(url, token) as client:
            await client.signal("os.screenshot", {"api": "x"})
            await client.drained()


def test_the_pacer_models_the_sidecars_bucket() -> None:
    pacer = Pacer(now=0.0, burst=50, rate=40)
    assert pacer.wait(6.0, 0.0) == 0
    for _ in range(8):
        pacer.spend(6.0, 0.0)
    assert pacer.wait(6.0, 0.0) == pytest.approx(4.0 / 40)    # 2 left, 4 short
    assert pacer.wait(6.0, 0.1) == 0
    pacer.empty(10.0)
    assert pacer.wait(1.0, 10.0) == pytest.approx(1 / 40)


async def test_a_long_resend_is_paced_within_the_sidecars_allowance(tmp_path: Path) -> None:
    db = tmp_path / "paced.db"
    devices = [{"kind": "audioinput", "label": f"USB Audio Device {k} " + "x" * 180,
                "id": f"{k:064x}"} for k in range(8)]
    async with live_sidecar(db) as first:
        port = first.port
        token = first.token("s-paced", "ios-1", "patient", CONSENT)
        client = ReferenceClient(first.ws_url, token, rng=random.Random(4))
        await client.start()
        await client.wait_for(lambda: client.consent is not None)
    try:
        await client.wait_for(lambda: not client.connected)
        for _ in range(1000):      # ~1.9 KB each: ~140 frames, far over a burst of 100
            await client.signal("client.devices", {"change": "added", "devices": devices})
        async with live_sidecar(db, port=port) as second:
            await client.drained(timeout=30)
            refused = second.sidecar.metrics.registry.get_sample_value(
                "sessionguard_invalid_messages_total", {"reason": "rate_limited"})
    finally:
        await client.close()
    assert not refused       # None: never counted
    assert sum(s["signal"] == "client.devices" for s in stored_signals(db, "s-paced")) >= 999


async def test_a_frame_refused_as_rate_limited_is_sent_again() -> None:
    frames: list[dict[str, Any]] = []

    async def refuse_first(ws: Any) -> None:
        await ws.send(json.dumps({"type": "consent", "monitoring": ["device"],
                                  "recording": "prohibited"}))
        async for raw in ws:
            msg = json.loads(raw)
            frames.append(msg)
            if len(frames) == 1:
                await ws.send(json.dumps({"type": "error", "code": "rate_limited",
                                          "message": "too many messages; slow down and resend"}))
            else:
                seqs = [i["seq"] for i in msg.get("items", [msg])]
                await ws.send(json.dumps({"type": "ack", "seqs": seqs}))

    async with serve(refuse_first, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with ReferenceClient(f"ws://127.0.0.1:{port}/v1/ws", "t",
                                   heartbeat_s=60) as client:
            await client.wait_for(lambda: client.consent is not None)
            await client.signal("os.screenshot", {"api": "x"})
            await client.drained(timeout=5)
    assert len(frames) == 2 and client.connects == 1
