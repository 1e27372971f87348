"""The integrity report served by a real sidecar and rendered by a real headless Chromium.

Set ``SESSIONGUARD_DOCS_SHOTS=1`` to write the screenshot to ``docs/report.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from monitor.store import SqliteStore
from tests.browser.harness import live_sidecar, playwright_context
from tests.panel.sample import populate
from tests.panel.scripted import ScriptedEngine
from tests.panel.test_panel_browser import shot_path

pytestmark = pytest.mark.browser


async def test_report_renders_with_its_timeline(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with SqliteStore(db) as store:
        # recent entries: the sidecar purges sessions past retention (30 days) at start
        populate(store, session="s-report", t0=int(time.time() * 1000) - 3_600_000)
    async with live_sidecar(db, engine=ScriptedEngine()) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        page = await ctx.new_page()
        await page.set_viewport_size({"width": 1000, "height": 1200})
        external: list[str] = []
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith(sc.origin) else None)
        console: list[str] = []
        page.on("console", lambda m: console.append(m.text))
        token = sc.token("s-report", "dr", "clinician")
        response = await page.goto(
            f"{sc.origin}/v1/sessions/s-report/report?format=html&token={token}")
        assert response is not None and response.status == 200
        timeline = page.locator("#timeline")
        await timeline.wait_for()
        box = await timeline.bounding_box()
        assert box is not None and box["width"] > 500 and box["height"] > 100
        assert await page.locator("#timeline circle.alert").count() == 2
        assert await page.locator("#timeline rect.blind").count() == 1
        assert "Audit trail verified" in await page.locator("#verification").inner_text()
        summary = await page.locator("#summary").inner_text()
        assert "2 alerts (1 critical, 1 notice)" in summary
        # the page's Content-Security-Policy lets its own inline style and SVG through
        assert not [m for m in console if "Content Security Policy" in m]
        assert await page.locator(".sev").first.evaluate(
            "e => getComputedStyle(e).backgroundColor") not in ("", "rgba(0, 0, 0, 0)")
        shot = shot_path(tmp_path, "report.png")
        await page.screenshot(path=str(shot), full_page=False,
                              clip={"x": 0, "y": 0, "width": 1000, "height": 900})
        other = sc.token("another-session", "dr", "clinician")
        refused = await page.goto(
            f"{sc.origin}/v1/sessions/s-report/report?format=html&token={other}")
        assert refused is not None and refused.status == 403
    assert external == []  # self-contained: nothing fetched from anywhere else
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size < 150_000


async def test_long_unbroken_text_wraps_inside_the_report(tmp_path: Path) -> None:
    from monitor.report import build_report, render_html
    from tests.panel.sample import T0

    with SqliteStore(tmp_path / "audit.db") as store:
        populate(store, session="s-long")
        store.append("s-long", "recording_request", T0 + 300_000, {
            "id": "r2", "participant": "p1", "reason": "x" * 500, "at": T0 + 300_000})
        store.append("s-long", "signal", T0 + 301_000, {
            "signal": "client.virtual_device", "at": T0 + 301_000, "participant": "p1",
            "data": {"kind": "audioinput", "label": "L" * 256}, "source": "client", "seq": 9})
        store.append_alert("s-long", {
            "id": "a-long", "session": "s-long", "participant": "p1", "rule": "virtual-device",
            "severity": "warning", "title": "Virtual device", "message": "m" * 300,
            "evidence": [{"signal": "client.virtual_device", "at": T0 + 301_000,
                          "data": {"label": "L" * 256}}], "at": T0 + 301_500})
        html = render_html(build_report(store, "s-long"))
    async with playwright_context(tmp_path / "profile") as ctx:
        page = await ctx.new_page()
        await page.set_viewport_size({"width": 800, "height": 900})
        await page.set_content(html)
        width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 800
