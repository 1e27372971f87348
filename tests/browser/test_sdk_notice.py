"""The patient's side: the monitoring notice the SDK shows, and what it never collects without
consent. Real headless Chromium against the real sidecar (see ``tests/browser/harness.py``)."""

from __future__ import annotations

import json
import socket
from typing import Any

import cv2
import numpy as np
import pytest

from tests.browser.harness import FULL, LiveSidecar, StaticSite, recv_until, sdk_page

pytestmark = pytest.mark.browser

FULL_TEXT = ("This session uses sessionguard: device and window activity, audio, video are "
             "monitored to detect recording. Recording policy: recording is not permitted.")

# A classic script run before the SDK: records every frame the page sends on a WebSocket, and
# counts the peer connections the page makes.
RECORD = """
window.sentFrames = [];
const origSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.sentFrames.push(String(data));
  return origSend.call(this, data); };
window.peerConnections = 0;
const OrigPC = window.RTCPeerConnection;
window.RTCPeerConnection = new Proxy(OrigPC, { construct(t, a, n) {
  window.peerConnections += 1; return Reflect.construct(t, a, n); } });
"""

# What a call platform puts over the bottom-left corner: a chat widget at the highest
# z-index, added after the notice; a call stage and the video, each made fullscreen on a click.
PLATFORM = """
const stage = document.createElement("div");
stage.id = "stage";
stage.style.cssText = "background:#ff0;width:100%;height:300px";
document.body.appendChild(stage);
const video = document.getElementById("v");
video.style.background = "#ff0";
document.getElementById("go").onclick = () => {
  const target = window.fullscreenTarget === "video" ? video : stage;
  target.requestFullscreen().then(() => { window.fullscreen = true; });
};
window.addWidget = () => {
  const w = document.createElement("div");
  w.id = "widget";
  w.style.cssText = "position:fixed;left:0;bottom:0;width:480px;height:160px;" +
    "background:#ff0;z-index:2147483647";
  document.body.appendChild(w);
};
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def open_page(ctx: Any, site: StaticSite, sc: LiveSidecar, session: str,
                    consent: dict[str, Any], *, name: str, ws_url: str | None = None,
                    before: str = "", after: str = "", options: str = "") -> Any:
    token = sc.token(session, "pat", "patient", consent)
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    await page.goto(site.add(f"{name}.html", sdk_page(
        sc.sdk_url, ws_url or sc.ws_url, token, before=before, after=after,
        connect_options=options)))
    await page.wait_for_function("window.sg.ready === true")
    return page


async def notice_seen(page: Any) -> bool:
    """Whether the notice's own colour is on screen inside its box, at a point of its padding:
    #234 at 92 % opacity, over whatever is under it (the page's covers are yellow or black)."""
    box = await page.locator(".sessionguard-notice").bounding_box()
    assert box is not None and box["width"] > 0
    shot = cv2.imdecode(np.frombuffer(await page.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    blue, green, red = (int(v) for v in shot[int(box["y"] + box["height"] / 2),
                                               int(box["x"] + 4)])
    return 20 <= red <= 64 and 35 <= green <= 80 and 50 <= blue <= 95


async def test_the_notice_shows_from_the_start_even_when_the_sidecar_is_out_of_reach(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    """Observing starts at connect() (the token's consent) and what is seen waits in the
    queue for the sidecar: the patient is told from then on, not once the sidecar answers."""
    ctx = await chromium()
    page = await open_page(ctx, site, sidecar, "s-away", FULL, name="away",
                           ws_url=f"ws://127.0.0.1:{free_port()}/v1/ws",
                           options="onNotice: (c) => { window.noticed = c; },")
    await page.wait_for_function("window.sg.statuses.some((s) => s.state === 'disconnected')")
    await page.keyboard.press("PrintScreen")
    await page.wait_for_function("window.sg.guard.pending >= 2")   # observed, waiting to go
    assert await page.locator(".sessionguard-notice").inner_text() == FULL_TEXT
    assert await page.evaluate("window.noticed") == FULL
    assert page.errors == []


async def test_the_notice_stays_above_the_page_fullscreen_and_widgets(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    page = await open_page(ctx, site, sidecar, "s-above", FULL, name="above", after=PLATFORM)
    await page.wait_for_selector(".sessionguard-notice")
    assert await notice_seen(page)
    await page.evaluate("window.addWidget()")     # a later element at the same z-index
    assert await notice_seen(page)
    await page.evaluate("document.getElementById('widget').remove()")
    await page.click("#go")                       # the call stage goes fullscreen
    await page.wait_for_function("window.fullscreen === true")
    assert await notice_seen(page)
    # ... and screen readers still find it (outside a fullscreen element, all is inert)
    cdp = await page.context.new_cdp_session(page)
    tree = await cdp.send("Accessibility.getFullAXTree")
    status = [n for n in tree["nodes"] if n.get("role", {}).get("value") == "status"]
    assert status and not status[0].get("ignored"), status
    await page.evaluate("document.exitFullscreen()")
    await page.wait_for_function("document.fullscreenElement === null")
    assert await notice_seen(page)
    # A fullscreen <video> holds no child: the notice is shown above it all the same.
    await page.evaluate("window.fullscreen = false; window.fullscreenTarget = 'video'")
    await page.click("#go")
    await page.wait_for_function("window.fullscreen === true")
    assert await notice_seen(page)
    assert page.errors == []


async def test_the_notice_changes_only_with_the_consent_and_reads_as_english(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    """A reconnect repeats the consent: a screen reader must not read the notice again. A
    clinician's change of policy is announced. The English text keeps its language and
    direction on an Arabic, right-to-left page."""
    ctx = await chromium()
    rtl = "document.documentElement.lang = 'ar'; document.documentElement.dir = 'rtl';"
    async with sidecar.clinician("s-same") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_page(ctx, site, sidecar, "s-same", FULL, name="same", before=rtl)
        await page.wait_for_function("window.sg.consents.length === 1")
        await page.evaluate("""() => { window.changes = 0;
            new MutationObserver((list) => { window.changes += list.length; }).observe(
              document.querySelector('.sessionguard-notice'),
              {childList: true, characterData: true, subtree: true}); }""")
        await page.evaluate("window.sg.guard._abandon('test: the socket goes')")
        await page.wait_for_function("window.sg.consents.length === 2")
        assert await page.evaluate("window.changes") == 0
        await clinician.send(json.dumps({"type": "consent.set", "recording": "provider_records"}))
        await page.wait_for_function("window.sg.consents.length === 3")
        assert await page.evaluate("window.changes") > 0
    notice = page.locator(".sessionguard-notice")
    assert (await notice.inner_text()).endswith(
        "Recording policy: the provider records this session.")
    assert await notice.evaluate("(el) => [el.closest('[lang]').lang, getComputedStyle(el)"
                                 ".direction]") == ["en", "ltr"]
    assert page.errors == []


async def test_the_page_may_give_the_notice_its_own_words(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    """onNotice returns a translation: the SDK's notice shows it (same place, same top layer),
    in the page's language, and follows each consent change with the page's new words."""
    ctx = await chromium()
    german = ("onNotice: (c) => `Diese Sitzung wird von sessionguard begleitet (${"
              "c.monitoring.join(', ')}); Aufnahme: ${c.recording}.`,")
    async with sidecar.clinician("s-words") as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_page(ctx, site, sidecar, "s-words", FULL, name="words",
                               before="document.documentElement.lang = 'de';",
                               options=german)
        await page.wait_for_function("window.sg.consents.length === 1")
        notice = page.locator(".sessionguard-notice")
        assert await notice.inner_text() == ("Diese Sitzung wird von sessionguard begleitet "
                                             "(device, audio, video); Aufnahme: prohibited.")
        assert await notice.evaluate("(el) => [el.closest('[lang]').lang, "
                                     "el.hasAttribute('popover')]") == ["de", True]
        await clinician.send(json.dumps({"type": "consent.set", "recording": "provider_records"}))
        await page.wait_for_function("window.sg.consents.length === 2")
        await page.wait_for_function("document.querySelector('.sessionguard-notice')"
                                     ".textContent.endsWith('Aufnahme: provider_records.')")
    assert page.errors == []


PATIENT_ACTIVITY = """async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  await window.sg.guard.attachMedia(stream);        // camera permission: labels readable
  for (const repeat of [false, true]) window.dispatchEvent(new KeyboardEvent("keydown",
      {key: "4", code: "Digit4", metaKey: true, shiftKey: true, repeat}));
  navigator.mediaDevices.dispatchEvent(new Event("devicechange"));
}"""


@pytest.mark.parametrize("monitoring", [["audio", "video"], ["device"]])
async def test_nothing_leaves_the_device_that_the_consent_does_not_cover(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar, monitoring: list[str]) -> None:
    """Without ``device``: no device list, key, focus or fullscreen signal (attaching media,
    which makes device labels readable, included). Without ``audio`` and ``video``:
    ``attachMedia`` makes no peer connection and sends no offer."""
    from tests.browser.harness import disable_focus_emulation

    ctx = await chromium(fake_media=True, permissions=["camera", "microphone"])
    session = "s-scope-" + "-".join(monitoring)
    consent = {"monitoring": monitoring, "recording": "prohibited"}
    async with sidecar.clinician(session) as clinician:
        await recv_until(clinician, lambda m: m["type"] == "status")
        page = await open_page(ctx, site, sidecar, session, consent, name=session,
                               before=RECORD)
        await page.wait_for_function("window.sg.consents.length > 0")
        await disable_focus_emulation(page)
        await page.evaluate(PATIENT_ACTIVITY)
        other = await ctx.new_page()
        await other.bring_to_front()                # the call page loses focus ...
        await page.bring_to_front()                 # ... and gets it back
        await page.evaluate("document.getElementById('v').requestFullscreen()"
                            ".catch(() => {})")
        # A later message on the same socket: once the clinician sees it, anything sent
        # before it was processed.
        await page.evaluate("void window.sg.guard.requestRecording('marker')")
        await recv_until(clinician, lambda m: m["type"] == "recording.request")
    frames = [json.loads(f) for f in await page.evaluate("window.sentFrames")]
    items = [f for f in frames if f["type"] == "signal"]
    items += [i for f in frames if f["type"] == "signals" for i in f["items"]]
    sent = {i["signal"] for i in items}
    offers = [f for f in frames if f["type"] == "webrtc.offer"]
    if "device" in monitoring:
        # the same activity is seen with the scope (so its absence above means something)
        assert {"client.devices", "client.key", "client.focus", "client.fullscreen"} <= sent, sent
        assert offers == [] and await page.evaluate("window.peerConnections") == 0
    else:
        assert sent == {"client.heartbeat"}, sent
        assert all(i["data"] == {} for i in items)
        assert len(offers) == 1
    assert page.errors == []


async def test_the_notice_outlasts_a_page_that_rebuilds_its_stage_or_hides_every_popover(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    """In fullscreen the notice is a child of the page's element: a page that rebuilds that
    element's children (a participant joined) must not take it away until fullscreen ends.
    And as a popover it must not vanish when the page closes 'every popover' (a route
    change, a menu library): hidden, it is shown again."""
    ctx = await chromium()
    page = await open_page(ctx, site, sidecar, "s-rebuild", FULL, name="rebuild",
                           after=PLATFORM)
    await page.wait_for_selector(".sessionguard-notice")
    await page.click("#go")
    await page.wait_for_function("window.fullscreen === true")
    await page.evaluate("document.getElementById('stage').replaceChildren("
                        "Object.assign(document.createElement('p'), {textContent: 'tiles'}))")
    await page.wait_for_function("document.querySelector('.sessionguard-notice')?.isConnected")
    assert await notice_seen(page)
    await page.evaluate("document.exitFullscreen()")
    await page.wait_for_function("document.fullscreenElement === null")
    await page.evaluate("document.querySelectorAll(':popover-open')"
                        ".forEach((p) => p.hidePopover())")
    await page.wait_for_function(
        "document.querySelector('.sessionguard-notice').matches(':popover-open')")
    assert await notice_seen(page)
    await page.evaluate("window.sg.guard.close()")    # ... and close() still removes it
    assert await page.locator(".sessionguard-notice").count() == 0
    assert page.errors == []
