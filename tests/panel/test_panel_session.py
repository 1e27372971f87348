"""The panel's hold on its session, in a real headless Chromium against a real sidecar: where
its token may go, what a new token (a new session) forgets, and what a reconnect must not
leave behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import websockets
from playwright.async_api import expect

from tests.browser.harness import live_sidecar, playwright_context

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
