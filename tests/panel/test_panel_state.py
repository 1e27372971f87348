"""Another clinician's actions reach the panel (``alert.state``), in a real headless Chromium
against a real sidecar: shown, not re-announced, and back after a reload. A repeat of the
alert marked a false alarm is shown muted, without being announced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import websockets

from tests.browser.harness import live_sidecar, playwright_context, recv_until
from tests.panel.scripted import ScriptedEngine
from tests.panel.test_panel_browser import open_panel, send_signal

pytestmark = pytest.mark.browser

DEVICE = {"monitoring": ["device"], "recording": "prohibited"}

# Counts every change of the panel's ARIA live regions from now on.
WATCH_LIVE = """() => {
  window.liveChanges = 0;
  const observer = new MutationObserver(() => { window.liveChanges += 1; });
  for (const region of document.querySelectorAll('[aria-live]')) {
    observer.observe(region, { childList: true, characterData: true, subtree: true });
  }
}"""


async def test_a_supervisors_ack_and_verdict_show_in_the_panel(tmp_path: Path) -> None:
    session = "s-state"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', DEVICE)}"
        async with websockets.connect(patient_url) as patient, \
                sc.clinician(session, "supervisor") as supervisor:
            await send_signal(patient, 1, "client.key", {"combo": "PrintScreen"})
            alert = await recv_until(supervisor, lambda m: m.get("type") == "alert")
            item = page.locator(f'.sg-alert[data-alert-id="{alert["id"]}"]')
            await item.wait_for()
            await page.wait_for_function(
                "document.querySelector('[aria-live=assertive]').textContent"
                ".includes('Screenshot keys pressed')")
            await page.evaluate(WATCH_LIVE)

            await supervisor.send(json.dumps({"type": "alert.ack", "id": alert["id"]}))
            await supervisor.send(json.dumps({"type": "alert.feedback", "id": alert["id"],
                                              "verdict": "false_positive"}))
            await recv_until(supervisor, lambda m: m.get("type") == "alert.state"
                             and m.get("feedback") == "false_positive")
            await page.wait_for_selector(
                f'.sg-alert[data-alert-id="{alert["id"]}"][data-acked="true"]')
            await item.locator('[data-verdict="false_positive"]').wait_for()
            assert "Acknowledged by supervisor" in await item.inner_text()
            assert await item.locator("button").count() == 0  # nothing left to do
            # a state is not news: the live regions stay silent (announce writes after 50 ms)
            await page.wait_for_timeout(150)
            assert await page.evaluate("window.liveChanges") == 0

            # a repeat of the false alarm is shown quietly: marked, and never announced
            await send_signal(patient, 2, "client.key", {"combo": "PrintScreen"})
            repeat = await recv_until(supervisor, lambda m: m.get("type") == "alert")
            assert repeat["muted"] is True
            muted = page.locator(f'.sg-alert[data-alert-id="{repeat["id"]}"][data-muted="true"]')
            await muted.wait_for()
            assert "repeats an alert marked a false alarm" in await muted.inner_text()
            await page.wait_for_timeout(450)  # past the 300 ms gathering and the 50 ms write
            assert await page.evaluate("window.liveChanges") == 0

            # after a reload the panel resumes: the alert comes back with its state
            await page.reload()
            item = page.locator(f'.sg-alert[data-alert-id="{alert["id"]}"]')
            await page.wait_for_selector(
                f'.sg-alert[data-alert-id="{alert["id"]}"][data-acked="true"]')
            await item.locator('[data-verdict="false_positive"]').wait_for()
            assert "Acknowledged by supervisor" in await item.inner_text()
            assert await page.locator(".sg-alert").count() == 2
            await page.locator(f'.sg-alert[data-alert-id="{repeat["id"]}"][data-muted="true"]'
                               ).wait_for()
