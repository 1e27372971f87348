"""The panel's words for a muted microphone (the limit ``muted``: the live path is tested in
tests/server/test_media_muted.py and tests/media_live/test_browser_muted.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import websockets

from tests.browser.harness import live_sidecar, playwright_context
from tests.panel.test_panel_browser import FULL, MEDIA_ON

pytestmark = pytest.mark.browser


async def test_panel_says_a_muted_microphone_sends_only_silence(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with live_sidecar(tmp_path / "audit.db", **MEDIA_ON) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        session = "s-muted"
        page = await ctx.new_page()
        clinician = sc.token(session, "dr", "clinician", FULL)
        await page.goto(f"{sc.origin}/panel/panel.html?token={clinician}")
        panel = page.locator("sessionguard-panel")
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', FULL)}"
        async with websockets.connect(patient_url):
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            await sc.sidecar.media_status(session, "p1", "audio", "flowing")
            await sc.sidecar.media_limit(session, "p1", "audio", "muted")
            await page.wait_for_selector('sessionguard-panel[data-state="limited"]')
            row = panel.locator(".sg-details dd[data-gap='true']")
            await expect(row).to_have_text(
                "sends only silence (muted?): sounds near the patient are not heard")
            reasons = await panel.locator(".sg-reasons").inner_text()
            assert "the microphone of patient p1 sends only silence (muted?)" in reasons
            await sc.sidecar.media_limit(session, "p1", "audio", None)
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            assert "silence" not in await panel.locator(".sg-details").inner_text()
