"""The browser SDK when things go wrong: privacy across sessions, dead sockets, oversized
resends, long outages, bad tokens — against the real sidecar, in real headless Chromium."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.browser.harness import (
    FULL,
    RECORD_SENT_FRAMES,
    LiveSidecar,
    StaticSite,
    live_sidecar,
    recv_until,
    sdk_page,
    stored_signals,
    wait_stored,
)

pytestmark = pytest.mark.browser

NO_DEVICE = {"monitoring": ["audio", "video"], "recording": "prohibited"}
KEY = ("window.dispatchEvent(new KeyboardEvent('keydown', "
       "{key: 'PrintScreen', code: 'PrintScreen'}))")


def names(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["signal"] for b in bodies]


async def open_call(ctx: Any, site: StaticSite, sc: LiveSidecar, session: str,
                    consent: dict[str, Any] | None, *, name: str, ws_url: str | None = None,
                    before: str = "", options: str = "", token: str | None = None,
                    wait: str = "window.sg.ready === true && window.sg.consents.length > 0",
                    clock: bool = False) -> Any:
    token = token or sc.token(session, "pat", "patient", consent)
    url = site.add(f"{name}.html", sdk_page(sc.sdk_url, ws_url or sc.ws_url, token,
                                            before=before, connect_options=options))
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    if clock:
        await page.clock.install()
    await page.goto(url)
    await page.wait_for_function(wait)
    return page


# A page with two appointments in a row: the first without the device scope, a recorder
# during it and one after its close(), then the second with the device scope.
TWO_APPOINTMENTS = """<!doctype html><html><head><script type="module">
import { connect } from %(sdk)s;
const rec = () => new MediaRecorder(document.createElement("canvas").captureStream(),
                                    {mimeType: "video/webm"});
const g1 = await connect({ url: %(ws)s, token: %(t1)s, onNotice: () => true });
rec();
g1.close();
rec();
window.g2 = await connect({ url: %(ws)s, token: %(t2)s });
window.ready = true;
</script></head><body>call</body></html>"""


async def test_captures_seen_without_consent_or_after_close_never_reach_a_later_session(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    t1 = sidecar.token("s-appt-1", "pat", "patient", NO_DEVICE)
    t2 = sidecar.token("s-appt-2", "pat", "patient", FULL)
    url = site.add("two-appointments.html", TWO_APPOINTMENTS % {
        "sdk": json.dumps(sidecar.sdk_url), "ws": json.dumps(sidecar.ws_url),
        "t1": json.dumps(t1), "t2": json.dumps(t2)})
    page = await ctx.new_page()
    await page.goto(url)
    await page.wait_for_function("window.ready === true")
    await page.evaluate(KEY)   # a marker sent after anything queued before it
    stored = await wait_stored(sidecar.db, "s-appt-2", lambda b: "client.key" in names(b))
    assert "client.media_recorder" not in names(stored)
    assert "client.capture_stream" not in names(stored)
    assert stored_signals(sidecar.db, "s-appt-1") == []


class FreezingProxy:
    """A TCP proxy in front of the sidecar. ``freeze()`` makes every connection open now stop
    carrying data in both directions without closing (a NAT mapping that timed out, a proxy
    that stopped forwarding); later connections pass."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.frozen: set[int] = set()
        self.conns: list[tuple[int, asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.ids = itertools.count()
        self.refusing = False

    async def __aenter__(self) -> FreezingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for _, a, b in self.conns:
            a.transport.abort()
            b.transport.abort()

    def freeze(self) -> None:
        self.frozen.update(cid for cid, _, _ in self.conns)

    def cut(self) -> None:
        """Close every connection open now, and refuse new ones until ``refusing`` is unset."""
        self.refusing = True
        for _, a, b in self.conns:
            a.transport.abort()
            b.transport.abort()

    async def _pipe(self, cid: int, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if cid in self.frozen:
                    continue       # swallowed: the peer never hears of it
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(Exception):
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cid = next(self.ids)
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.conns.append((cid, writer, up_writer))
        await asyncio.gather(self._pipe(cid, reader, up_writer),
                             self._pipe(cid, up_reader, writer))


async def test_a_socket_that_silently_stops_carrying_data_is_replaced(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    async with FreezingProxy(sidecar.port) as proxy:
        page = await open_call(ctx, site, sidecar, "s-frozen", FULL, name="frozen",
                               ws_url=f"ws://127.0.0.1:{proxy.port}/v1/ws", clock=True)
        await page.wait_for_function("window.sg.guard.pending === 0")
        proxy.freeze()
        await page.evaluate(KEY)
        # heartbeats go unanswered; well within 25 s the SDK gives the socket up
        await page.clock.run_for(25_000)
        await page.wait_for_function("window.sg.guard.pending === 0", timeout=10_000)
        await wait_stored(sidecar.db, "s-frozen", lambda b: "client.key" in names(b))
        assert await page.evaluate("window.sg.statuses.at(-1).state") == "connected"
        assert len(proxy.conns) == 2
    assert page.errors == []


# Forty devices with long labels, all new at each devicechange: every client.devices change
# is several KB, so a resend of a few of them is far over the sidecar's 64 KiB frame limit.
MANY_DEVICES = """
(() => {
  const md = navigator.mediaDevices;
  let gen = 0;
  window.churn = () => { gen++; md.dispatchEvent(new Event("devicechange")); };
  md.enumerateDevices = async () => Array.from({length: 40}, (_, i) => ({
    kind: i % 2 ? "audioinput" : "videoinput", groupId: "g", deviceId: "dev-" + gen + "-" + i,
    label: "USB Audio Device " + i + " (" + "x".repeat(120) + ") gen " + gen}));
})();
"""


async def test_a_large_resend_is_split_into_frames_the_sidecar_accepts(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    ctx = await chromium()
    await ctx.add_init_script(MANY_DEVICES)
    db = tmp_path / "big.db"
    async with live_sidecar(db) as first:
        port = first.port
        page = await open_call(ctx, site, first, "s-big", FULL, name="big")
        await page.wait_for_function("window.sg.guard.pending === 0")
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'disconnected')")
    for gen in range(1, 5):
        await page.evaluate("window.churn()")
        await page.wait_for_function(f"""[...window.sg.guard._unacked.values()].some(
            (m) => JSON.stringify(m.data).includes("gen {gen}"))""")
    queued = await page.evaluate("""JSON.stringify({type: "signals",
        items: [...window.sg.guard._unacked.values()]}).length""")
    assert queued > 64 * 1024
    async with live_sidecar(db, port=port):
        await page.wait_for_function("window.sg.guard.pending === 0", timeout=15_000)
    changes = [s for s in stored_signals(db, "s-big") if s["signal"] == "client.devices"]
    assert len(changes) == 1 + 2 * 4   # initial, then added + removed per churn
    assert not await page.evaluate("window.sg.statuses.some((s) => s.code === 1009)")


async def test_a_connection_closed_at_once_does_not_reset_the_backoff(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    # A server that accepts the WebSocket and closes it at once, every time (as the sidecar
    # did for a frame over its limit): the SDK's reconnects must still back off.
    opened: list[float] = []
    four = asyncio.Event()

    async def close_at_once(ws: Any) -> None:
        opened.append(asyncio.get_running_loop().time())
        if len(opened) >= 4:
            four.set()
        await ws.close(1011, "going away")

    async with websockets.serve(close_at_once, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        ctx = await chromium()
        await open_call(ctx, site, sidecar, "s-flap", FULL, name="flap",
                        ws_url=f"ws://127.0.0.1:{port}/v1/ws", wait="window.sg.ready === true")
        await asyncio.wait_for(four.wait(), 20)
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    # backoff 0.5 s, 1 s, 2 s (each between half and all of it): the third gap is >= 1 s
    assert gaps[2] >= 0.9, gaps


async def test_a_long_outage_keeps_signals_not_heartbeats_and_reports_every_drop(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    ctx = await chromium()
    db = tmp_path / "outage.db"
    async with live_sidecar(db) as first:
        port = first.port
        page = await open_call(ctx, site, first, "s-outage", FULL, name="outage", clock=True)
        await wait_stored(db, "s-outage", lambda b: "client.devices" in names(b))
        await page.wait_for_function("window.sg.guard.pending === 0")
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'disconnected')")
    # 1,010 signals while offline: ten more than the queue holds
    await page.evaluate(f"for (let i = 0; i < 1010; i++) {KEY}")
    await page.clock.run_for(10 * 60_000)          # ten minutes offline: 120 heartbeats
    queued = await page.evaluate("""[...window.sg.guard._unacked.values()].map((m) => m.signal)""")
    assert queued.count("client.heartbeat") == 1
    assert queued.count("client.key") == 999
    await page.clock.resume()
    async with live_sidecar(db, port=port):
        await page.wait_for_function("window.sg.guard.pending === 0", timeout=20_000)
    stored = stored_signals(db, "s-outage")
    dropped = sum(s["data"].get("dropped", 0) for s in stored if s["signal"] == "client.heartbeat")
    assert names(stored).count("client.key") + dropped == 1010
    assert page.errors == []


async def test_signals_queued_offline_leave_only_under_the_consent_found_on_reconnect(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """While the page is offline it queues a screenshot key (the device scope). Meanwhile the
    session's consent narrows: another device of the patient joins with a token without the
    device scope. On reconnect the SDK waits for the connection's consent message before it
    resends anything, and what that consent no longer covers never leaves the page (it was
    sent at once, then dropped by the sidecar as out of scope)."""
    ctx = await chromium()
    db = tmp_path / "narrowed.db"
    async with live_sidecar(db) as first:
        port = first.port
        page = await open_call(ctx, site, first, "s-narrowed", FULL, name="narrowed",
                               before=RECORD_SENT_FRAMES, clock=True)
        await page.wait_for_function("window.sg.guard.pending === 0")
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'disconnected')")
    # no reconnect yet (Playwright's number is seconds)
    await page.clock.pause_at(await page.evaluate("Date.now() / 1000 + 1"))
    await page.evaluate(KEY)
    queued = await page.evaluate("[...window.sg.guard._unacked.values()].map((m) => m.signal)")
    assert "client.key" in queued
    async with live_sidecar(db, port=port) as second:
        other = second.token("s-narrowed", "pat-phone", "patient", NO_DEVICE)
        async with websockets.connect(f"{second.ws_url}?token={other}") as phone:
            narrowed = await recv_until(phone, lambda m: m["type"] == "consent")
        assert "device" not in narrowed["monitoring"]
        mark = await page.evaluate("window.sentFrames.length")
        await page.clock.resume()
        await page.wait_for_function(
            "window.sg.consents.some((c) => !c.monitoring.includes('device'))", timeout=20_000)
        await page.wait_for_function("window.sg.guard.pending === 0", timeout=20_000)
        sent = [json.loads(f) for f in (await page.evaluate("window.sentFrames"))[mark:]]
    items = [i for f in sent for i in (f["items"] if f["type"] == "signals" else [f])]
    assert [i["signal"] for i in items if i["type"] == "signal"
            and i["signal"] != "client.heartbeat"] == []
    assert page.errors == []


async def test_request_recording_after_close_settles_at_once(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    page = await open_call(ctx, site, sidecar, "s-closed-req", FULL, name="closed-req")
    await page.evaluate("window.sg.guard.close()")
    got = await page.evaluate("""Promise.race([
        window.sg.guard.requestRecording("after close"),
        new Promise((r) => setTimeout(() => r("still pending"), 2000))])""")
    assert got == {"id": None, "approved": False, "error": "closed"}


async def test_a_token_expired_before_the_page_loaded_is_renewed(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    from monitor.tokens import mint

    ctx = await chromium()
    two_hours_ago = int((time.time() - 7200) * 1000)
    stale = mint(sidecar.secret, "s-stale-tok", "pat", "patient", 3600, FULL, now=two_hours_ago)
    page = await ctx.new_page()
    asked: list[int] = []

    def fresh_token() -> str:
        asked.append(1)
        return sidecar.token("s-stale-tok", "pat", "patient", FULL)

    await page.expose_function("freshToken", fresh_token)
    await page.goto(site.add("stale-token.html", sdk_page(
        sidecar.sdk_url, sidecar.ws_url, stale,
        connect_options="getToken: () => window.freshToken(),")))
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'connected')",
                                 timeout=15_000)
    assert len(asked) == 1
    await page.evaluate(KEY)
    await wait_stored(sidecar.db, "s-stale-tok", lambda b: "client.key" in names(b))


async def test_device_labels_are_sent_once_permission_gives_them_with_device_consent_only(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    # fake devices, but no fake permission prompt: labels only once permission is granted
    ctx = await chromium(extra_args=["--use-fake-device-for-media-stream"])
    consent = {"monitoring": ["device"], "recording": "prohibited"}
    page = await open_call(ctx, site, sidecar, "s-labels", consent, name="labels")
    first = await wait_stored(sidecar.db, "s-labels", lambda b: "client.devices" in names(b))
    assert {d["label"] for s in first if s["signal"] == "client.devices"
            for d in s["data"]["devices"]} == {""}      # no permission yet: no labels
    await ctx.grant_permissions(["camera", "microphone"])
    await page.evaluate("""async () => {
        const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
        await window.sg.guard.attachMedia(stream); }""")
    stored = await wait_stored(sidecar.db, "s-labels", lambda b: any(
        s["signal"] == "client.devices" and any(d["label"] for d in s["data"]["devices"])
        for s in b), timeout=10)
    labelled = [s for s in stored if s["signal"] == "client.devices"][-1]["data"]
    assert labelled["change"] == "initial"
    assert "Fake Default Audio Input" in {d["label"] for d in labelled["devices"]}


BAD_TOKEN_PAGE = """<!doctype html><html><head><script type="module">
import { connect } from %(sdk)s;
window.opens = 0;
const Real = window.WebSocket;
window.WebSocket = new Proxy(Real, { construct(t, a, n) {
  window.opens += 1; return Reflect.construct(t, a, n); } });
window.statuses = [];
window.guard = await connect({ url: %(ws)s, token: %(token)s, onNotice: () => true,
                               onStatus: (s) => window.statuses.push(s) });
window.ready = true;
</script></head><body>call</body></html>"""


@pytest.mark.parametrize("kind", ["promise", "clinician"])
async def test_a_token_that_cannot_work_is_reported_not_retried(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar, kind: str) -> None:
    ctx = await chromium()
    token = ("fetch('/no-such-token')" if kind == "promise"          # a forgotten await
             else json.dumps(sidecar.token("s-bad-tok", "dr", "clinician")))
    page = await ctx.new_page()
    await page.goto(site.add(f"bad-token-{kind}.html", BAD_TOKEN_PAGE % {
        "sdk": json.dumps(sidecar.sdk_url), "ws": json.dumps(sidecar.ws_url), "token": token}))
    status = await page.wait_for_function("""window.statuses.find(
        (s) => s.error === "invalid_token")""", timeout=5_000)
    status = await status.json_value()
    assert status["state"] == "expired"
    assert ("Promise" if kind == "promise" else "clinician") in status["message"]
    assert await page.evaluate("window.opens") == 0
    # a proper token given later is used at once
    fresh = sidecar.token("s-bad-tok", "pat", "patient", FULL)
    await page.evaluate("(t) => window.guard.setToken(t)", fresh)
    await page.wait_for_function("window.statuses.at(-1).state === 'connected'")


LEAVE_BUTTON = """
const b = document.createElement("button"); b.id = "leave"; b.textContent = "Leave call";
b.style.cssText = "position:fixed;left:16px;bottom:16px";
b.onclick = () => { window.left = true; };
document.body.appendChild(b);
"""


async def test_the_default_notice_does_not_block_clicks_and_reads_well(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    token = sidecar.token("s-notice", "pat", "patient", FULL)
    page = await ctx.new_page()
    await page.goto(site.add("notice-click.html", sdk_page(
        sidecar.sdk_url, sidecar.ws_url, token, after=LEAVE_BUTTON)))
    await page.wait_for_selector(".sessionguard-notice")
    box = await page.locator("#leave").bounding_box()
    assert box is not None
    await page.mouse.click(box["x"] + 5, box["y"] + 5)    # under the notice
    assert await page.evaluate("window.left === true")
    text = await page.evaluate("""(url) => import(url).then((m) => [
        m.noticeText({monitoring: [], recording: "prohibited"}),
        m.noticeText({monitoring: ["audio"], recording: "prohibited"})])""", sidecar.sdk_url)
    assert text[0].startswith("This session uses sessionguard: nothing is monitored")
    assert text[1].startswith("This session uses sessionguard: audio is monitored")


async def test_a_decision_made_while_the_page_was_disconnected_reaches_it(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    async with FreezingProxy(sidecar.port) as proxy, sidecar.clinician("s-blip") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_call(ctx, site, sidecar, "s-blip", FULL, name="blip",
                               ws_url=f"ws://127.0.0.1:{proxy.port}/v1/ws")
        await page.evaluate("void window.sg.guard.requestRecording('review')"
                            ".then((d) => { window.decision = d; })")
        request = await recv_until(clinician, lambda m: m["type"] == "recording.request")
        await page.wait_for_function("window.sg.guard._requestId !== null")
        proxy.cut()                     # the patient's network goes for a moment
        await page.wait_for_function("window.sg.statuses.at(-1).state !== 'connected'")
        await clinician.send(json.dumps({"type": "recording.decision", "id": request["id"],
                                         "approve": True}))
        await recv_until(clinician, lambda m: m["type"] == "recording.decision")
        proxy.refusing = False          # ... and comes back
        await page.wait_for_function("window.decision !== undefined", timeout=15_000)
        assert await page.evaluate("window.decision") == {"id": request["id"], "approved": True}
        # the clinicians were not asked again
        entries = sidecar.sidecar.store.store.entries("s-blip")
        assert sum(e["kind"] == "recording_request" for e in entries) == 1


# Once ``window.huge()`` is called, 64 devices whose labels are 256 control characters (each
# written as \u0007 in JSON): a client.devices signal of about 100 KB, over any frame the
# sidecar accepts.
HUGE_DEVICES = """
(() => {
  const md = navigator.mediaDevices;
  let huge = false;
  window.huge = () => { huge = true; md.dispatchEvent(new Event("devicechange")); };
  md.enumerateDevices = async () => huge
    ? Array.from({length: 64}, (_, i) => ({kind: "audioinput", groupId: "g",
        deviceId: "big-" + i, label: "\\u0007".repeat(256)}))
    : [{kind: "audioinput", groupId: "g", deviceId: "mic", label: "Desk microphone"}];
})();
"""


async def test_a_signal_too_large_for_any_frame_is_dropped_counted_and_reported(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    await ctx.add_init_script(HUGE_DEVICES)
    page = await open_call(ctx, site, sidecar, "s-huge", FULL, name="huge", clock=True)
    await wait_stored(sidecar.db, "s-huge", lambda b: "client.devices" in names(b))
    await page.evaluate("window.huge()")
    status = await page.wait_for_function("""window.sg.statuses.find(
        (s) => s.error === "signal_too_large")""")
    status = await status.json_value()
    assert "client.devices" in status["message"] and "\u0007" not in json.dumps(status)
    await page.evaluate(KEY)      # what comes after it is not held up
    await page.clock.run_for(5_000)   # the next heartbeat counts the drop
    stored = await wait_stored(sidecar.db, "s-huge", lambda b: "client.key" in names(b) and any(
        s["signal"] == "client.heartbeat" and s["data"].get("dropped") for s in b))
    assert sum(s["data"].get("dropped", 0) for s in stored
               if s["signal"] == "client.heartbeat") == 1
    changes = [s["data"]["change"] for s in stored if s["signal"] == "client.devices"]
    assert changes == ["initial", "removed"]     # the small part of the change got through
    assert not await page.evaluate("window.sg.statuses.some((s) => s.code === 1009)")
    assert await page.evaluate("window.sg.guard.pending") == 0


BAD_URL_PAGE = """<!doctype html><html><head><script type="module">
import { connect } from %(sdk)s;
window.opens = 0;
const Real = window.WebSocket;
window.WebSocket = new Proxy(Real, { construct(t, a, n) {
  window.opens += 1; return Reflect.construct(t, a, n); } });
connect({ url: %(ws)s, token: %(token)s, onNotice: () => true })
  .then((g) => { window.result = {resolved: g.pending >= 0}; },
        (e) => { window.result = {name: e.name, message: e.message}; });
</script></head><body>call</body></html>"""


@pytest.mark.parametrize(("kind", "url"), [
    ("scheme", "ftp://127.0.0.1:{port}/v1/ws"),
    ("unparsable", "ws://[127.0.0.1:{port}/v1/ws"),
    ("fragment", "ws://127.0.0.1:{port}/v1/ws#call"),
])
async def test_a_url_that_cannot_work_is_refused_at_once_not_retried(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar, kind: str, url: str) -> None:
    ctx = await chromium()
    token = sidecar.token("s-bad-url", "pat", "patient", FULL)
    page = await ctx.new_page()
    await page.goto(site.add(f"bad-url-{kind}.html", BAD_URL_PAGE % {
        "sdk": json.dumps(sidecar.sdk_url), "ws": json.dumps(url.format(port=sidecar.port)),
        "token": json.dumps(token)}))
    result = await (await page.wait_for_function("window.result")).json_value()
    assert result.get("name") == "TypeError", result
    assert {"scheme": "ftp:", "unparsable": "not a valid URL",
            "fragment": "fragment"}[kind] in result["message"]
    assert token not in result["message"]
    assert await page.evaluate("window.opens") == 0


async def test_an_http_url_is_a_websocket_url(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    http_url = sidecar.ws_url.replace("ws://", "http://", 1)
    page = await open_call(ctx, site, sidecar, "s-http-url", FULL, name="http-url",
                           ws_url=http_url)
    await page.evaluate(KEY)
    await wait_stored(sidecar.db, "s-http-url", lambda b: "client.key" in names(b))


# A thousand client.devices changes of about 1.9 KB each: a resend of ~140 frames, well over
# the sidecar's per-connection burst of 100 tokens.
QUEUE_BIG_CHANGES = """() => {
  for (let i = 0; i < 1000; i++) {
    window.sg.guard._signal("client.devices", {change: "added", devices: Array.from(
      {length: 8}, (_, k) => ({kind: "audioinput", id: "d" + i + "-" + k,
                                label: "USB Audio Device " + k + " " + "x".repeat(180)}))});
  }
}"""


async def test_a_long_resend_is_paced_within_the_sidecars_allowance(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    ctx = await chromium()
    db = tmp_path / "paced.db"
    async with live_sidecar(db) as first:
        port = first.port
        page = await open_call(ctx, site, first, "s-paced", FULL, name="paced")
        await page.wait_for_function("window.sg.guard.pending === 0")
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'disconnected')")
    await page.evaluate(QUEUE_BIG_CHANGES)
    assert await page.evaluate("window.sg.guard.pending") >= 999
    async with live_sidecar(db, port=port) as second:
        await page.wait_for_function("window.sg.guard.pending === 0", timeout=30_000)
        refused = second.sidecar.metrics.registry.get_sample_value(
            "sessionguard_invalid_messages_total", {"reason": "rate_limited"})
    errors = await page.evaluate("window.sg.statuses.filter((s) => s.error).map((s) => s.error)")
    assert not [e for e in errors if isinstance(e, dict) and e.get("code") == "rate_limited"]
    assert not refused     # None: never counted
    stored = stored_signals(db, "s-paced")
    assert sum(1 for s in stored if s["signal"] == "client.devices"
               and s["data"]["change"] == "added") >= 999
