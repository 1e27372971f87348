"""The panel says, in words, that a patient's app could not deliver signals (a heartbeat's
``dropped``): a real sidecar, a real headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
import websockets
from playwright.async_api import expect

from tests.browser.harness import live_sidecar, playwright_context, recv_until
from tests.panel.scripted import ScriptedEngine
from tests.panel.test_panel_browser import open_panel, send_signal

pytestmark = pytest.mark.browser

DEVICE = {"monitoring": ["device"], "recording": "prohibited"}


async def test_the_panel_tells_of_signals_the_patients_app_could_not_deliver(
        tmp_path: Path) -> None:
    session = "s-gap"
    async with live_sidecar(tmp_path / "audit.db", engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await open_panel(ctx, sc, session, DEVICE)
        panel = page.locator("sessionguard-panel")
        gaps = panel.locator(".sg-gaps")
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', DEVICE)}"
        async with websockets.connect(patient_url) as patient:
            await recv_until(patient, lambda m: m.get("type") == "consent")
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            assert await gaps.inner_text() == ""
            await send_signal(patient, 1, "client.heartbeat", {"dropped": 7})
            words = ("The patient's app could not deliver 7 signals while it was offline (its "
                     "queue for them was full): the record of this session has a gap there, and "
                     "a sign of recording among them may have been missed.")
            await expect(gaps).to_have_text(words)
            # announced once, politely; monitoring itself is on (the gap is in the past)
            await page.wait_for_function(
                "document.querySelector('[aria-live=polite]').textContent"
                ".includes('could not deliver 7 signals')")
            assert await panel.get_attribute("data-state") == "on"
            await send_signal(patient, 2, "client.heartbeat", {"dropped": 1})
            await expect(gaps).to_contain_text("could not deliver 8 signals")
            # a reload shows it again (from the status a new connection gets)
            await page.reload()
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            await expect(panel.locator(".sg-gaps")).to_contain_text("could not deliver 8 signals")
