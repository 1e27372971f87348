"""The panel and recording requests the sidecar no longer holds, in a real headless Chromium
against a real sidecar."""

from __future__ import annotations

import asyncio
import json
import signal as signals
from pathlib import Path

import pytest
import websockets
from playwright.async_api import expect

from tests.browser.harness import live_sidecar, playwright_context, recv_until
from tests.panel.scripted import ScriptedEngine
from tests.panel.test_panel_browser import open_panel

pytestmark = pytest.mark.browser

DEVICE = {"monitoring": ["device"], "recording": "prohibited"}


async def test_an_unknown_request_error_marks_only_the_request_it_names(tmp_path: Path) -> None:
    session = "s-named"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        panel = page.locator("sessionguard-panel")

        def patient_url(who: str) -> str:
            return f"{sc.ws_url}?token={sc.token(session, who, 'patient', DEVICE)}"

        async with websockets.connect(patient_url("p1")) as p1, \
                websockets.connect(patient_url("p2")) as p2, \
                sc.clinician(session, "sup") as supervisor:
            ids = []
            for patient in (p1, p2):
                await recv_until(patient, lambda m: m.get("type") == "consent")
                await patient.send(json.dumps({"type": "recording.request", "reason": "notes"}))
                ids.append((await recv_until(patient, lambda m: m.get("type") == "ok"))["id"])
                await page.wait_for_selector(f'.sg-request[data-request-id="{ids[-1]}"]')
            first, second = ids
            # The panel misses the supervisor's decline of the first request, and the
            # sidecar's error text is read by no one: the words may change (here they do not
            # name the request), the "id" field is what names it.
            # What the panel shows of each request right after the error is kept: the second
            # request's own decision arriving later must not be what puts it right.
            await page.evaluate("""([missed, other]) => {
              const p = document.getElementById('panel');
              const handle = p.handle.bind(p);
              window.afterError = [];
              p.handle = (m) => {
                if (m.type === 'recording.decision' && m.id === missed) return;
                handle(m.type === 'error' ? { ...m, message: 'no pending recording request' } : m);
                if (m.type === 'error') {
                  const box = (id) => document.querySelector(
                    `.sg-request[data-request-id="${id}"]`);
                  window.afterError.push([box(missed).innerText, box(other).innerText]);
                }
              }; }""", [first, second])
            await supervisor.send(json.dumps({"type": "recording.decision", "id": first,
                                              "approve": False}))
            await recv_until(p1, lambda m: m.get("type") == "recording.decision")
            # Both approved at once: both decisions are in flight when the first's error
            # comes back.
            await page.evaluate("""ids => { for (const id of ids) document.querySelector(
              `.sg-request[data-request-id="${id}"] [data-action="approve"]`).click(); }""", ids)
            refused = panel.locator(f'.sg-request[data-request-id="{first}"]')
            approved = panel.locator(f'.sg-request[data-request-id="{second}"]')
            await expect(refused.locator(".sg-done")).to_contain_text("No longer waiting")
            await expect(approved.locator(".sg-done")).to_have_text(
                "Approved: the patient may record.")
            [(shown_first, shown_second)] = await page.evaluate("window.afterError")
            assert "No longer waiting" in shown_first
            assert "No longer waiting" not in shown_second and "Approving" in shown_second
            assert await recv_until(p2, lambda m: m.get("type") == "recording.decision") == {
                "type": "recording.decision", "id": second, "approved": True}


async def test_a_waiting_request_is_still_offered_after_the_sidecar_is_killed(
        tmp_path: Path) -> None:
    """A real ``sessionguard serve``, SIGKILLed and started again on the same port and
    database: the panel reconnects by itself and the request is still there to decide."""
    from tests.server.conftest import SECRET, token
    from tests.server.test_durability import free_port, start_serve

    session, rid = "s1", "rr-panel-restart-1"
    port = free_port()
    proc, _ = await start_serve(tmp_path, port)
    try:
        async with playwright_context(tmp_path / "profile") as ctx:
            page = await ctx.new_page()
            await page.goto(f"http://127.0.0.1:{port}/panel/panel.html?token="
                            f"{token(session, 'dr', 'clinician', ttl_s=3600, secret=SECRET)}")
            await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
            box = page.locator(f'.sg-request[data-request-id="{rid}"]')
            patient_url = (f"ws://127.0.0.1:{port}/v1/ws?token="
                           f"{token(session, 'p1', 'patient', DEVICE)}")
            async with websockets.connect(patient_url) as patient:
                await recv_until(patient, lambda m: m.get("type") == "consent")
                await patient.send(json.dumps({"type": "recording.request", "reason": "notes",
                                               "id": rid}))
                await recv_until(patient, lambda m: m.get("type") == "ok")
                await expect(box.locator('[data-action="approve"]')).to_be_enabled()
                proc.send_signal(signals.SIGKILL)
                await proc.wait()
            await page.wait_for_selector('sessionguard-panel[data-state="offline"]')
            proc, _ = await start_serve(tmp_path, port)
            # reconnected, resumed: the request waits still, and says so
            await page.wait_for_function("""() => { const p = document.getElementById('panel');
              return p.link === 'open' && p.status !== null && !p.resuming; }""",
                                         timeout=30_000)
            assert await box.locator(".sg-gone").count() == 0
            async with websockets.connect(patient_url) as patient:
                await recv_until(patient, lambda m: m.get("type") == "consent")
                await patient.send(json.dumps({"type": "recording.request", "reason": "notes",
                                               "id": rid}))
                assert (await recv_until(patient, lambda m: m.get("type") == "ok")).get(
                    "pending") is True
                await box.locator('[data-action="decline"]').click()
                assert await recv_until(
                    patient, lambda m: m.get("type") == "recording.decision") == {
                    "type": "recording.decision", "id": rid, "approved": False}
                await expect(box.locator(".sg-done")).to_have_text("Declined.")
    finally:
        if proc.returncode is None:
            proc.send_signal(signals.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)
