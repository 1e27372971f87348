"""The browser SDK against the real sidecar, in real headless Chromium.

The test page lives on the static site (another origin) and imports the SDK from the
sidecar's ``/sdk/sessionguard.js``, as a platform page would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    FULL,
    RECORD_SENT_FRAMES,
    LiveSidecar,
    StaticSite,
    disable_focus_emulation,
    live_sidecar,
    recv_until,
    sdk_page,
    stored_signals,
    wait_stored,
)

pytestmark = pytest.mark.browser


# An init script that adds "BlackHole 2ch" to the device list once the page says so.
BLACKHOLE = """
(() => {
  const md = navigator.mediaDevices;
  const real = md.enumerateDevices.bind(md);
  window.addBlackHole = () => { window.blackHole = true;
    md.dispatchEvent(new Event("devicechange")); };
  md.enumerateDevices = async () => {
    const list = await real();
    if (!window.blackHole) return list;
    return [...list, {kind: "audioinput", label: "BlackHole 2ch", deviceId: "bh-raw-id-123",
                      groupId: "bh", toJSON() { return this; }}];
  };
})();
"""

CAPTURE_SCRIPT = """async () => {
  const shot = navigator.mediaDevices.getDisplayMedia({video: true});
  const res = await Promise.race([shot.then(() => "ok", (e) => e.name),
                                  new Promise((r) => setTimeout(() => r("timeout"), 10000))]);
  const canvas = document.createElement("canvas");
  canvas.getContext("2d").fillRect(0, 0, 4, 4);
  const rec = new MediaRecorder(canvas.captureStream(5), {mimeType: "video/webm"});
  const raw = (await navigator.mediaDevices.enumerateDevices()).map((d) => d.deviceId);
  return {display: res, recorder: rec.state, raw};
}"""


def names(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["signal"] for b in bodies]


async def open_call(ctx: Any, site: StaticSite, sc: LiveSidecar, session: str,
                    consent: dict[str, Any] | None, *, name: str, before: str = "",
                    options: str = "", pre_connect: str = "") -> Any:
    token = sc.token(session, "pat", "patient", consent)
    url = site.add(f"{name}.html", sdk_page(sc.sdk_url, sc.ws_url, token, before=before,
                                            connect_options=options, pre_connect=pre_connect))
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(url)
    await page.wait_for_function("window.sg.ready === true && window.sg.consents.length > 0")
    return page


async def test_capture_apis_and_devices_are_reported(chromium: Any, site: StaticSite,
                                                     sidecar: LiveSidecar) -> None:
    ctx = await chromium(fake_media=True, permissions=["camera", "microphone"])
    # A recorder created after the import but before connect(): queued, then sent.
    early = ("new MediaRecorder(document.createElement('canvas').captureStream(),"
             " {mimeType: 'video/webm;codecs=vp8'});")
    page = await open_call(ctx, site, sidecar, "s-capture", FULL, name="capture",
                           pre_connect=early)
    out = await page.evaluate(CAPTURE_SCRIPT)
    assert out["display"] == "ok" and out["recorder"] == "inactive"
    # Focus: with Playwright's focus emulation off, another page in front blurs this one.
    await disable_focus_emulation(page)
    other = await ctx.new_page()
    await other.bring_to_front()
    await page.bring_to_front()
    stored = await wait_stored(sidecar.db, "s-capture", lambda b: {
        "client.display_capture", "client.media_recorder", "client.capture_stream",
        "client.devices", "client.screens"} <= set(names(b))
        and any(s["signal"] == "client.focus" and s["data"]["focused"] for s in b))
    by_name = {b["signal"]: b for b in stored}
    assert by_name["client.display_capture"]["data"]["api"] == "getDisplayMedia"
    assert by_name["client.capture_stream"]["data"] == {"element": "canvas"}
    recorders = [b["data"].get("mimeType") for b in stored
                 if b["signal"] == "client.media_recorder"]
    assert recorders == ["video/webm;codecs=vp8", "video/webm"]
    focus = [b["data"] for b in stored if b["signal"] == "client.focus"]
    assert focus[0] == {"focused": False} and focus[-1]["away_ms"] >= 0
    assert by_name["client.screens"]["data"]["extended"] is False
    devices = by_name["client.devices"]["data"]
    assert devices["change"] == "initial"
    labels = {d["label"] for d in devices["devices"]}
    assert "Fake Default Audio Input" in labels or "Fake Audio Input 1" in labels, labels
    assert any(label.startswith("fake_device_0") for label in labels), labels
    raw_ids = {r for r in out["raw"] if r}
    assert raw_ids, "Chromium exposed no device ids"
    for d in devices["devices"]:
        assert re.fullmatch(r"[0-9a-f]{64}", d["id"]), d
        assert d["id"] not in raw_ids
    assert page.errors == []


async def test_blackhole_device_becomes_a_virtual_device_alert(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium(fake_media=True, permissions=["camera", "microphone"])
    await ctx.add_init_script(BLACKHOLE)
    async with sidecar.clinician("s-bh") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_call(ctx, site, sidecar, "s-bh", FULL, name="blackhole")
        await wait_stored(sidecar.db, "s-bh", lambda b: "client.devices" in names(b))
        await page.evaluate("window.addBlackHole()")
        # (a "device-added" info alert may come first: wait for the virtual-device one)
        alert = await recv_until(clinician, lambda m: m["type"] == "alert" and any(
            e["signal"] == "client.virtual_device" for e in m["evidence"]))
    virtual = [e for e in alert["evidence"] if e["signal"] == "client.virtual_device"]
    assert virtual and virtual[0]["data"]["label"] == "BlackHole 2ch", json.dumps(alert)
    assert virtual[0]["data"]["kind"] == "audioinput"
    stored = await wait_stored(sidecar.db, "s-bh", lambda b: any(
        s["signal"] == "client.devices" and s["data"]["change"] == "added" for s in b))
    added = [s for s in stored if s["signal"] == "client.devices"
             and s["data"]["change"] == "added"]
    assert [d["label"] for d in added[0]["data"]["devices"]] == ["BlackHole 2ch"]
    assert "bh-raw-id-123" not in json.dumps(stored)


async def test_without_device_scope_nothing_is_observed(chromium: Any, site: StaticSite,
                                                        sidecar: LiveSidecar) -> None:
    ctx = await chromium(fake_media=True, permissions=["camera", "microphone"])
    await ctx.add_init_script(BLACKHOLE)
    consent = {"monitoring": ["audio", "video"], "recording": "prohibited"}
    async with sidecar.clinician("s-nodev") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_call(ctx, site, sidecar, "s-nodev", consent, name="nodevice",
                               before=RECORD_SENT_FRAMES)
        out = await page.evaluate(CAPTURE_SCRIPT)
        assert out["display"] == "ok"
        await page.evaluate("window.addBlackHole()")
        await page.keyboard.press("PrintScreen")
        # A later message on the same socket: once the clinician sees it, anything sent
        # before it would have been processed.
        await page.evaluate("void window.sg.guard.requestRecording('marker')")
        await recv_until(clinician, lambda m: m["type"] == "recording.request")
    frames = [json.loads(f) for f in await page.evaluate("window.sentFrames")]
    # Only the heartbeat, which carries nothing (so the sidecar knows the SDK is alive).
    items = [f for f in frames if f["type"] == "signal"]
    items += [i for f in frames if f["type"] == "signals" for i in f["items"]]
    assert items and {(i["signal"], json.dumps(i["data"])) for i in items} == {
        ("client.heartbeat", "{}")}, frames
    assert [f["type"] for f in frames if f["type"] not in ("signal", "signals")] == [
        "recording.request"]
    assert stored_signals(sidecar.db, "s-nodev") == []
    assert page.errors == []


async def test_print_screen_is_one_signal_from_its_keyup_alone_or_with_its_keydown(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    """Windows sends the page only PrintScreen's keyup (the system takes the keydown); other
    systems send both, and a held key repeats its keydown. Each press is one signal, a held
    Cmd+Shift combination's too."""
    ctx = await chromium()
    async with sidecar.clinician("s-print") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_call(ctx, site, sidecar, "s-print", FULL, name="print",
                               before=RECORD_SENT_FRAMES)
        await page.evaluate("""() => {
            const key = (type, repeat = false) => window.dispatchEvent(new KeyboardEvent(
                type, {key: "PrintScreen", code: "PrintScreen", repeat}));
            key("keyup");                                    // as on Windows
            key("keydown"); key("keydown", true); key("keydown", true);  // held, elsewhere
            key("keyup");
            // a held Cmd+Shift+4 (where the OS lets it through) is one press too
            for (const repeat of [false, true, true]) window.dispatchEvent(new KeyboardEvent(
                "keydown", {key: "4", code: "Digit4", metaKey: true, shiftKey: true, repeat}));
        }""")
        # A later message on the same socket: once the clinician sees it, anything sent
        # before it was processed.
        await page.evaluate("void window.sg.guard.requestRecording('marker')")
        await recv_until(clinician, lambda m: m["type"] == "recording.request")
    frames = [json.loads(f) for f in await page.evaluate("window.sentFrames")]
    items = [f for f in frames if f["type"] == "signal"]
    items += [i for f in frames if f["type"] == "signals" for i in f["items"]]
    assert [i["data"] for i in items if i["signal"] == "client.key"] == [
        {"combo": "PrintScreen"}, {"combo": "PrintScreen"}, {"combo": "Meta+Shift+4"}]
    assert page.errors == []


async def test_notice_and_recording_request_round_trip(chromium: Any, site: StaticSite,
                                                       sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    throwing = ("onNotice: (c) => { window.noticeSeen = c; throw new Error('platform bug'); },"
                "onRecordingDecision: () => { throw new Error('another platform bug'); },")
    async with sidecar.clinician("s-rec") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_call(ctx, site, sidecar, "s-rec", FULL, name="notice",
                               options=throwing)
        notice = page.get_by_role("status")
        await notice.wait_for()
        text = await notice.inner_text()
        assert text == ("This session uses sessionguard: device and window activity, audio, "
                        "video are monitored to detect recording. Recording policy: recording "
                        "is not permitted.")
        # asked twice before the clinician decides: one request, and the decision answers both
        handled = asyncio.Event()
        requests = 0
        original = sidecar.sidecar._recording_request

        async def counted(*args: Any) -> None:
            nonlocal requests
            await original(*args)
            requests += 1
            if requests == 2:
                handled.set()

        sidecar.sidecar._recording_request = counted
        await page.evaluate("void window.sg.guard.requestRecording('to review the exercises')"
                            ".then((d) => { window.decision = d; })")
        request = await recv_until(clinician, lambda m: m["type"] == "recording.request")
        assert request["reason"] == "to review the exercises"
        await page.evaluate("void window.sg.guard.requestRecording('again')"
                            ".then((d) => { window.again = d; })")
        await asyncio.wait_for(handled.wait(), 20)
        await clinician.send(json.dumps({"type": "recording.decision", "id": request["id"],
                                         "approve": True}))
        await page.wait_for_function("window.decision !== undefined && window.again !== undefined")
        decision = await page.evaluate("window.decision")
        assert decision == {"id": request["id"], "approved": True}
        assert await page.evaluate("window.again") == decision
        entries = sidecar.sidecar.store.store.entries("s-rec")
        assert sum(e["kind"] == "recording_request" for e in entries) == 1
        await page.wait_for_function(
            "window.sg.consents.some((c) => c.recording === 'patient_allowed')")
        assert (await notice.inner_text()).endswith("Recording policy: you may record this "
                                                    "session.")
    # A platform that shows its own notice: onNotice returns true, no default element.
    own = await open_call(ctx, site, sidecar, "s-own", FULL, name="own-notice",
                          options="onNotice: (c) => { window.own = c; return true; },")
    await own.wait_for_function("window.own && window.own.recording === 'prohibited'")
    assert await own.locator(".sessionguard-notice").count() == 0
    assert page.errors == [] and own.errors == []


async def test_sidecar_restart_loses_no_signal(chromium: Any, site: StaticSite,
                                               tmp_path: Path) -> None:
    db = tmp_path / "restart.db"
    ctx = await chromium()
    async with live_sidecar(db) as first:
        port = first.port
        page = await open_call(ctx, site, first, "s-restart", FULL, name="restart",
                               before=RECORD_SENT_FRAMES)
        await page.keyboard.press("PrintScreen")
        await wait_stored(db, "s-restart", lambda b: "client.key" in names(b))
    await page.wait_for_function(
        "window.sg.statuses.some((s) => s.state === 'disconnected')")
    # While the sidecar is down the page keeps observing; these wait in the SDK's queue.
    await page.evaluate("""() => {
        const c = document.createElement("canvas");
        new MediaRecorder(c.captureStream());
        new MediaRecorder(c.captureStream(), {mimeType: "video/webm"});
    }""")
    await page.keyboard.press("Meta+Shift+4")
    assert await page.evaluate("window.sg.guard.pending") >= 4
    async with live_sidecar(db, port=port):
        await page.wait_for_function("window.sg.guard.pending === 0", timeout=30_000)
    frames = [json.loads(f) for f in await page.evaluate("window.sentFrames")]
    sent = [f for f in frames if f["type"] == "signal"]
    sent += [i for f in frames if f["type"] == "signals" for i in f["items"]]
    stored = stored_signals(db, "s-restart")
    # empty heartbeats only prove liveness: the sidecar acks them without storing them
    sent = [s for s in sent if s["signal"] != "client.heartbeat" or s["data"]]
    assert {s["seq"] for s in sent} <= {s["seq"] for s in stored}
    counts = {n: names(stored).count(n) for n in ("client.key", "client.media_recorder",
                                                  "client.capture_stream")}
    assert counts == {"client.key": 2, "client.media_recorder": 2, "client.capture_stream": 2}
    assert any(f["type"] == "signals" for f in frames), "nothing was resent after the restart"
    assert page.errors == []


class _Clock:
    """The sidecar's clock, movable forward: rules with a hold need no real waiting."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset


async def test_switching_tab_raises_visibility_and_reaches_the_clinician(
        cdp_chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    clock = _Clock()
    async with live_sidecar(tmp_path / "vis.db", clock=clock) as sc:
        token = sc.token("s-vis", "pat", "patient", FULL)
        url = site.add("visibility.html", sdk_page(sc.sdk_url, sc.ws_url, token))
        browser = await cdp_chromium()
        async with sc.clinician("s-vis") as clinician:
            await recv_until(clinician, lambda m: m["type"] == "status")
            page = await browser.new_page(url)
            await page.wait_for("window.sg.ready && window.sg.consents.length > 0")
            assert await page.evaluate("document.visibilityState") == "visible"
            await browser.new_page("about:blank")   # a foreground tab hides the call page
            await page.wait_for("document.visibilityState === 'hidden'")
            await wait_stored(sc.db, "s-vis", lambda b: any(
                s["signal"] == "client.visibility" and s["data"]["state"] == "hidden"
                for s in b))
            clock.offset = 3 * 60_000     # past the default rule's 2-minute hold
            await sc.sidecar.tick()
            # the jump also leaves the page 3 min without a heartbeat on the sidecar's clock,
            # so "sdk-silent" may come first: wait for the visibility alert itself
            alert = await recv_until(clinician, lambda m: m["type"] == "alert" and any(
                e["signal"] == "client.visibility" for e in m["evidence"]))
            assert [e["signal"] for e in alert["evidence"]] == ["client.visibility"]
            assert alert["participant"] == "pat" and alert["session"] == "s-vis"
            await page.activate()
            await page.wait_for("document.visibilityState === 'visible'")
            stored = await wait_stored(sc.db, "s-vis", lambda b: any(
                s["signal"] == "client.visibility" and s["data"]["state"] == "visible"
                for s in b))
    visible = [s for s in stored if s["signal"] == "client.visibility"][-1]
    assert visible["data"]["away_ms"] >= 0


async def _short_token_page(ctx: Any, site: StaticSite, sc: LiveSidecar, session: str,
                            name: str, options: str = "") -> Any:
    # 3 s: the sidecar closes the channel at expiry ("token_expired", 1008)
    token = sc.token(session, "pat", "patient", FULL, ttl_s=3)
    url = site.add(f"{name}.html", sdk_page(sc.sdk_url, sc.ws_url, token,
                                            connect_options=options))
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page, url


async def _token_source(page: Any, sc: LiveSidecar, session: str) -> list[int]:
    """Expose ``window.freshToken()`` (what a page's getToken would fetch from its backend);
    the returned list grows by one per call."""
    asked: list[int] = []

    def fresh_token() -> str:
        asked.append(1)
        return sc.token(session, "pat", "patient", FULL)

    await page.expose_function("freshToken", fresh_token)
    return asked


async def test_an_expired_token_is_renewed_through_get_token(chromium: Any, site: StaticSite,
                                                              sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    page, url = await _short_token_page(ctx, site, sidecar, "s-renew", "renew",
                                        "getToken: () => window.freshToken(),")
    asked = await _token_source(page, sidecar, "s-renew")
    await page.goto(url)
    await page.wait_for_function("window.sg.ready === true && window.sg.consents.length > 0")
    # the sidecar closes the channel at expiry; the SDK asks for a token and reconnects
    await page.wait_for_function(
        "window.sg.statuses.some((s) => s.error && s.error.code === 'token_expired')",
        timeout=15_000)
    await page.wait_for_function(
        """(() => { const s = window.sg.statuses;
                    const i = s.findIndex((x) => x.error && x.error.code === 'token_expired');
                    return s.slice(i + 1).some((x) => x.state === 'connected'); })()""",
        timeout=15_000)
    assert len(asked) == 1
    await page.keyboard.press("PrintScreen")
    await wait_stored(sidecar.db, "s-renew", lambda b: "client.key" in names(b))
    assert not await page.evaluate("window.sg.statuses.some((s) => s.state === 'expired')")
    assert page.errors == []


async def test_without_get_token_the_sdk_waits_for_set_token(chromium: Any, site: StaticSite,
                                                             sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    page, url = await _short_token_page(ctx, site, sidecar, "s-expire", "expire")
    await page.goto(url)
    await page.wait_for_function("window.sg.ready === true && window.sg.consents.length > 0")
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'expired')",
                                 timeout=15_000)
    await page.keyboard.press("PrintScreen")  # observed and kept until a token arrives
    assert await page.evaluate("window.sg.guard.pending") >= 1
    fresh = sidecar.token("s-expire", "pat", "patient", FULL)
    await page.evaluate("(t) => window.sg.guard.setToken(t)", fresh)
    await page.wait_for_function("window.sg.guard.pending === 0", timeout=15_000)
    await wait_stored(sidecar.db, "s-expire", lambda b: "client.key" in names(b))
    # the SDK did not retry with the dead token: the sidecar refused no handshake
    registry = sidecar.sidecar.metrics.registry
    refused = sum(m.value for metric in registry.collect()
                  if metric.name == "sessionguard_handshakes_refused"
                  for m in metric.samples if m.name.endswith("_total"))
    assert refused == 0
    assert page.errors == []


async def test_a_page_clock_hours_off_does_not_make_a_token_look_expired(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    token = sidecar.token("s-skew", "pat", "patient", FULL, ttl_s=600)
    fast_clock = "const realNow = Date.now; Date.now = () => realNow() + 3 * 3600 * 1000;"
    url = site.add("skew.html", sdk_page(sidecar.sdk_url, sidecar.ws_url, token,
                                         before=fast_clock,
                                         connect_options="getToken: () => window.freshToken(),"))
    page = await ctx.new_page()
    asked = await _token_source(page, sidecar, "s-skew")
    await page.goto(url)
    await page.wait_for_function("window.sg.ready === true && window.sg.consents.length > 0")
    await page.keyboard.press("PrintScreen")
    await wait_stored(sidecar.db, "s-skew", lambda b: "client.key" in names(b))
    assert asked == []  # the token was used, not renewed because of the page's clock
