"""The panel's hold on its session, in a real headless Chromium against a real sidecar: where
its token may go, what a new token (a new session) forgets, and what a reconnect must not
leave behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from playwright.async_api import expect

from tests.browser.harness import live_sidecar, playwright_context, recv_until
from tests.panel.scripted import ScriptedEngine
from tests.panel.test_panel_browser import open_panel, send_signal

pytestmark = pytest.mark.browser

DEVICE = {"monitoring": ["device"], "recording": "prohibited"}


async def test_a_saved_token_never_goes_to_another_server(tmp_path: Path) -> None:
    offered: list[str] = []

    async def other(ws: Any) -> None:  # a WebSocket server the link names
        offered.append(ws.request.headers.get("Sec-WebSocket-Protocol") or "")
        await ws.close()

    async with websockets.serve(other, "127.0.0.1", 0,
                                select_subprotocol=lambda conn, offers: None) as server, \
            live_sidecar(tmp_path / "audit.db") as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        other_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/x"
        page = await ctx.new_page()
        panel = page.locator("sessionguard-panel")
        token = sc.token("s-url", "dr", "clinician")
        await page.goto(f"{sc.origin}/panel/panel.html?token={token}")
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        # The same tab opens a link naming another server, without a token: the saved token
        # stays home.
        await page.goto(f"{sc.origin}/panel/panel.html?url={other_url}")
        await expect(panel.locator(".sg-state")).to_contain_text("No clinician token")
        assert offered == []
        # A link with its own url and token works, and so does a reload of it (the url stays
        # in the address bar, the token does not).
        await page.goto(f"{sc.origin}/panel/panel.html?url={sc.ws_url}&token={token}")
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        assert "token" not in page.url
        await page.reload()
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        # Back to the page's own sidecar without a token: the token saved for it works.
        await page.goto(f"{sc.origin}/panel/panel.html")
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
    assert offered == []


async def hide_tab(sc: Any, session: str, count: int) -> None:
    """``count`` alerts in ``session`` (the scripted engine: a hidden tab is a warning)."""
    url = f"{sc.ws_url}?token={sc.token(session, 'p-' + session, 'patient', DEVICE)}"
    async with websockets.connect(url) as patient:
        for seq in range(1, count + 1):
            await send_signal(patient, seq, "client.visibility", {"state": "hidden"})


async def test_a_new_token_starts_a_clean_panel(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        await hide_tab(sc, "s-b", 2)  # session B already has alerts 1 and 2
        page = await ctx.new_page()
        await page.goto(f"{sc.origin}/panel/panel.html?token="
                        f"{sc.token('s-a', 'dr', 'clinician', DEVICE)}")
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        await hide_tab(sc, "s-a", 3)
        await page.wait_for_function("document.querySelectorAll('.sg-alert').length === 3")
        session_b = sc.token("s-b", "dr", "clinician", DEVICE)
        await page.evaluate("t => document.getElementById('panel').setAttribute('token', t)",
                            session_b)
        # Session B's alerts, all of them, and none of session A's.
        await page.wait_for_function("document.querySelectorAll('.sg-alert').length === 2")
        sessions = await page.evaluate(
            "[...document.getElementById('panel').alerts.values()].map(e => e.alert.session)")
        assert sessions == ["s-b", "s-b"]
        # A fresh token of the same session (a refresh) keeps what is shown.
        await page.evaluate("t => document.getElementById('panel').setAttribute('token', t)",
                            sc.token("s-b", "dr", "clinician", DEVICE, ttl_s=7200))
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        assert await page.locator(".sg-alert").count() == 2


async def test_a_request_decided_elsewhere_is_never_shown_as_this_panels_decision(
        tmp_path: Path) -> None:
    session = "s-req"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        panel = page.locator("sessionguard-panel")
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', DEVICE)}"
        async with websockets.connect(patient_url) as patient, \
                sc.clinician(session, "sup") as supervisor:
            await recv_until(patient, lambda m: m.get("type") == "consent")

            async def asked(reason: str) -> str:
                await patient.send(json.dumps({"type": "recording.request", "reason": reason}))
                request = await recv_until(supervisor, lambda m: m.get("reason") == reason)
                await page.wait_for_selector(f'.sg-request[data-request-id="{request["id"]}"]')
                return str(request["id"])

            async def declined(rid: str) -> None:
                await supervisor.send(json.dumps({"type": "recording.decision", "id": rid,
                                                  "approve": False}))
                await recv_until(patient, lambda m: m.get("type") == "recording.decision")

            # (a) The supervisor declines; this panel misses that and approves: the sidecar
            # refuses, and the panel says so instead of "Approved".
            first = await asked("first")
            await page.evaluate("""() => { const p = document.getElementById('panel');
              const handle = p.handle.bind(p);
              p.handle = (m) => { if (m.type !== 'recording.decision') handle(m); }; }""")
            await declined(first)
            box = panel.locator(f'.sg-request[data-request-id="{first}"]')
            await box.locator('[data-action="approve"]').click()
            await expect(box.locator(".sg-done")).to_contain_text("No longer waiting")
            assert "Approved" not in await box.inner_text()
            await expect(panel.locator(".sg-details")).to_contain_text("Recording not allowed")
            await page.evaluate("() => { const p = document.getElementById('panel');"
                                " delete p.handle; }")
            # (b) Decided while this panel was away: after the reconnect it is not offered.
            second = await asked("second")
            await page.evaluate("() => { const p = document.getElementById('panel');"
                                " p.closed = true; p.ws.close(); }")
            await page.wait_for_function("document.getElementById('panel').ws === null")
            await declined(second)
            await page.evaluate("() => { const p = document.getElementById('panel');"
                                " p.closed = false; p.open(); }")
            box = panel.locator(f'.sg-request[data-request-id="{second}"]')
            await expect(box.locator(".sg-done")).to_contain_text("No longer waiting")
            assert await box.locator("button").count() == 0
            # (c) This panel's own decision shows once the sidecar confirms it.
            third = await asked("third")
            box = panel.locator(f'.sg-request[data-request-id="{third}"]')
            await box.locator('[data-action="decline"]').click()
            await recv_until(patient, lambda m: m.get("type") == "recording.decision"
                             and m.get("id") == third)
            await expect(box.locator(".sg-done")).to_have_text("Declined.")


async def test_an_action_lost_with_the_connection_can_be_taken_again(tmp_path: Path) -> None:
    session = "s-lost"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        await hide_tab(sc, session, 1)
        await page.wait_for_selector(".sg-alert")
        # The ack and the verdict leave just as the connection dies: neither arrives.
        await page.evaluate("""() => { const ws = document.getElementById('panel').ws;
          ws.send = () => {};
          document.querySelector('[data-action="ack"]').click();
          document.querySelector('[data-action="false_positive"]').click();
          ws.close(); }""")
        ack = page.locator('.sg-alert [data-action="ack"]')
        await expect(ack).to_have_text("Acknowledging…")
        # After the reconnect the buttons work again (the sidecar's alert.state is the truth).
        await expect(ack).to_have_text("Acknowledge")
        await expect(ack).to_be_enabled()
        await expect(page.locator('.sg-alert [data-action="false_positive"]')).to_be_enabled()
        await ack.click()
        await page.wait_for_selector('.sg-alert[data-acked="true"]')


async def test_a_restarted_sidecar_is_never_shown_on_from_the_old_status(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    session = "s-restart"
    async with playwright_context(tmp_path / "profile") as ctx:
        page = await ctx.new_page()
        async with live_sidecar(db, engine=ScriptedEngine()) as sc:
            port = sc.port
            await page.goto(f"{sc.origin}/panel/panel.html?token="
                            f"{sc.token(session, 'dr', 'clinician', DEVICE)}")
            patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', DEVICE)}"
            async with websockets.connect(patient_url):
                await page.wait_for_selector('sessionguard-panel[data-state="on"]')
                # every state the panel shows from now on
                await page.evaluate("""() => { window.shown = [];
                  new MutationObserver((records) => { for (const r of records)
                      window.shown.push(r.target.dataset.state); })
                    .observe(document.getElementById('panel'), { attributeFilter: ['data-state'] });
                }""")
        await page.wait_for_selector('sessionguard-panel[data-state="offline"]')
        # back without its patient: blind, and never "on" on the way
        async with live_sidecar(db, port=port, engine=ScriptedEngine()):
            await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        assert "on" not in await page.evaluate("window.shown")


async def test_face_evidence_is_worded_as_what_the_detector_found(tmp_path: Path) -> None:
    async with live_sidecar(tmp_path / "audit.db") as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await ctx.new_page()
        await page.goto(f"{sc.origin}/panel/panel.html")
        words = await page.evaluate("""async () => {
          const { describeEvidence } = await import('/panel/panel.js');
          return [describeEvidence('video.no_person', {}),
                  describeEvidence('video.extra_person', {})]; }""")
    assert words == ["The face detector found no face in the picture",
                     "The face detector found two or more faces"]


async def test_long_unbroken_text_wraps_inside_the_panel(tmp_path: Path) -> None:
    session = "s-long"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await ctx.new_page()
        await page.set_viewport_size({"width": 420, "height": 800})
        await page.goto(f"{sc.origin}/panel/panel.html?token="
                        f"{sc.token(session, 'dr', 'clinician', DEVICE)}")
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', DEVICE)}"
        async with websockets.connect(patient_url) as patient:
            await patient.send(json.dumps({"type": "recording.request", "reason": "x" * 500}))
            await page.wait_for_selector(".sg-request")
            # an alert whose evidence names a device with a 256-character label
            await page.evaluate("""() => document.getElementById('panel').handle({
              type: 'alert', id: 'a-long', seq: 1, rule: 'virtual-device', severity: 'warning',
              title: 'T'.repeat(200), message: 'm'.repeat(300), at: Date.now(),
              evidence: [{ signal: 'client.virtual_device', at: Date.now(),
                           data: { label: 'L'.repeat(256) } }],
              suggested_response: ['r'.repeat(300)] })""")
            await page.wait_for_selector(".sg-alert")
            widths = await page.evaluate("""() => { const p = document.getElementById('panel');
              return [document.documentElement.scrollWidth, p.scrollWidth, p.clientWidth]; }""")
        assert widths[0] <= 420 and widths[1] <= widths[2], widths


FOCUS = """() => { const a = document.activeElement;
  return [a.closest('.sg-request')?.dataset.requestId || null,
          a.dataset.action || a.className || a.tagName]; }"""


async def test_requests_keep_keyboard_focus_and_name_the_patient(tmp_path: Path) -> None:
    session = "s-keys"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        panel = page.locator("sessionguard-panel")

        def patient(name: str) -> Any:
            return websockets.connect(
                f"{sc.ws_url}?token={sc.token(session, name, 'patient', DEVICE)}")

        async with patient("p1") as p1, patient("p2") as p2:
            for ws in (p1, p2):
                await recv_until(ws, lambda m: m.get("type") == "consent")
            await expect(panel.locator(".sg-details")).to_contain_text("Patient p2")
            await p1.send(json.dumps({"type": "recording.request", "reason": "first"}))
            first = panel.locator(".sg-request").first
            await first.wait_for()
            rid = await first.get_attribute("data-request-id")
            # two patients in the session: the box says which one asks
            await expect(first.locator("h3")).to_have_text("Patient p1 asks to record")
            await first.locator('[data-action="decline"]').focus()
            await p2.send(json.dumps({"type": "recording.request", "reason": "second"}))
            await page.wait_for_function("document.querySelectorAll('.sg-request').length === 2")
            assert await page.evaluate(FOCUS) == [rid, "decline"]
            await page.keyboard.press("Enter")
            await expect(first.locator(".sg-done")).to_have_text("Declined.")
            assert await page.evaluate(FOCUS) == [rid, "sg-done"]


# Every text the panel's live regions speak, and the sidecar's "ok" to each resume, from the
# page's first script on (so nothing said while the panel loads is missed).
LISTEN = """document.addEventListener('DOMContentLoaded', () => {
  window.spoken = []; window.resumed = 0;
  new MutationObserver(() => {
    for (const r of document.querySelectorAll('[aria-live]')) {
      if (r.textContent && r.dataset.said !== r.textContent) {
        r.dataset.said = r.textContent; window.spoken.push(r.textContent); }
    }
  }).observe(document.body, { childList: true, characterData: true, subtree: true });
  document.getElementById('panel').addEventListener('sessionguard-message', (e) => {
    if (e.detail.type === 'ok' && e.detail.ref === 'resume') window.resumed += 1; });
});"""


async def test_only_new_alerts_are_announced_and_a_burst_as_one(tmp_path: Path) -> None:
    session = "s-say"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        await ctx.add_init_script(LISTEN)
        page = await open_panel(ctx, sc, session, DEVICE)
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', DEVICE)}"
        async with websockets.connect(patient_url) as patient:
            await send_signal(patient, 1, "client.visibility", {"state": "hidden"})
            await page.wait_for_function("window.spoken.some(t => t.includes('left the call'))")
            await page.locator('[data-action="ack"]').click()
            await page.wait_for_selector('.sg-alert[data-acked="true"]')
            # A reload replays the old (acknowledged) alert: shown, not announced.
            await page.reload()
            await page.wait_for_function("window.resumed === 1")
            await page.wait_for_selector('.sg-alert[data-acked="true"]')
            # A burst of three alerts is one announcement, led by the most severe.
            now = int(time.time() * 1000)
            items = [{"type": "signal", "seq": seq, "signal": name, "at": now, "data": data}
                     for seq, name, data in [
                         (2, "client.visibility", {"state": "hidden"}),
                         (3, "client.key", {"combo": "PrintScreen"}),
                         (4, "client.visibility", {"state": "hidden"})]]
            await patient.send(json.dumps({"type": "signals", "items": items}))
            await page.wait_for_function("window.spoken.length > 0")
            spoken = await page.evaluate("window.spoken")
        assert spoken == ["3 new alerts, the most severe: critical alert: Screenshot keys pressed."]


async def test_an_alert_renders_alone_in_its_place(tmp_path: Path) -> None:
    session = "s-many"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        # 120 alerts of every severity already shown (handed to the panel as from its socket)
        await page.evaluate("""() => { const p = document.getElementById('panel');
          const sev = ['info', 'notice', 'warning', 'critical'];
          for (let i = 1; i <= 120; i++) p.handle({ type: 'alert', id: 'old-' + i, seq: 0,
            rule: 'r', severity: sev[i % 4], title: 'Old ' + i, at: Date.now() - 1e6 + i });
          window.built = 0;
          new MutationObserver((records) => { for (const r of records)
              window.built += [...r.addedNodes].filter((n) => n.matches?.('.sg-alert')).length; })
            .observe(p.querySelector('.sg-alerts'), { childList: true }); }""")
        await hide_tab(sc, session, 1)  # a warning, the newest
        await page.wait_for_selector(".sg-alert[data-alert-id='tab-hidden-1']")
        await page.locator("[data-alert-id='tab-hidden-1'] [data-action='ack']").click()
        await page.wait_for_selector(".sg-alert[data-alert-id='tab-hidden-1'][data-acked='true']")
        # only that alert's node, once per step: new, "Acknowledging…", acknowledged, and
        # "Acknowledged by dr" (the sidecar's alert.state); never the other 120
        assert await page.evaluate("window.built") <= 4
        ids = await page.locator(".sg-alert").evaluate_all("els => els.map(e => e.dataset.alertId)")
        want = await page.evaluate("document.getElementById('panel').sortedAlerts()"
                                   ".map(e => e.alert.id)")
        assert ids == want and len(ids) == 121
        warnings = [i for i in ids if i == "tab-hidden-1" or int(i.split("-")[1]) % 4 == 2]
        assert warnings[-1] == "tab-hidden-1"  # acknowledged: after the open warnings
