"""The clinician panel in a real headless Chromium against a real sidecar and SQLite store.

Set ``SESSIONGUARD_DOCS_SHOTS=1`` to write the screenshots to ``docs/`` (panel.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from monitor.store import SqliteStore
from tests.browser.harness import live_sidecar, playwright_context, recv_until
from tests.panel.scripted import ScriptedEngine

pytestmark = pytest.mark.browser

FULL = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
DOCS = Path(__file__).resolve().parents[2] / "docs"


def shot_path(tmp_path: Path, name: str) -> Path:
    return DOCS / name if os.environ.get("SESSIONGUARD_DOCS_SHOTS") else tmp_path / name


async def wait_entry(db: Path, session: str, kind: str, **match: Any) -> dict[str, Any]:
    """Await an audit entry (written by the server's writer thread) of ``kind`` whose body
    contains ``match``."""
    async with asyncio.timeout(15):
        while True:
            with SqliteStore(db) as store:
                for entry in store.entries(session):
                    body = entry["body"]
                    if entry["kind"] == kind and all(body.get(k) == v for k, v in match.items()):
                        return dict(entry)
            await asyncio.sleep(0.05)  # polling another process's database: no event to await


async def send_signal(ws: Any, seq: int, name: str, data: dict[str, Any]) -> None:
    at = time.time_ns() // 1_000_000
    await ws.send(json.dumps({"type": "signal", "seq": seq, "signal": name, "at": at,
                              "data": data}))
    await recv_until(ws, lambda m: m.get("type") == "ack" and m.get("seq") == seq)


async def open_panel(ctx: Any, sc: Any, session: str, consent: dict[str, Any]) -> Any:
    """A new page showing the panel of ``session`` for clinician ``dr``, once it has its
    first status (blind: no patient yet)."""
    page = await ctx.new_page()
    await page.goto(f"{sc.origin}/panel/panel.html?token="
                    f"{sc.token(session, 'dr', 'clinician', consent)}")
    await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
    return page


#: media analysis on (so the consented camera and microphone are not reported unwatched),
#: with a receiver factory that no offer reaches in these tests (their patients send none),
#: and no deadline for media to arrive (a slow run must not turn the panel blind midway)
MEDIA_ON = {"media": True, "media_factory": lambda *args: None,
            "media_config": {"expect_within_s": None}}


async def test_panel_shows_status_alerts_and_round_trips_actions(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    # The real engine with the default rules.
    async with live_sidecar(db, **MEDIA_ON) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        session = "s-panel"
        page = await ctx.new_page()
        await page.set_viewport_size({"width": 420, "height": 860})
        clinician = sc.token(session, "dr", "clinician", FULL)
        await page.goto(f"{sc.origin}/panel/panel.html?token={clinician}")
        panel = page.locator("sessionguard-panel")

        # No patient yet: the panel says it is blind, and why.
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        assert "no patient is connected" in await panel.locator(".sg-reasons").inner_text()
        assert "token" not in page.url  # the token left the address bar

        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', FULL)}"
        async with websockets.connect(patient_url) as patient:
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            details = await panel.locator(".sg-details").inner_text()
            assert "connected" in details and "camera" in details and "Recording not allowed" \
                in details

            await send_signal(patient, 1, "client.key", {"combo": "PrintScreen"})
            await page.wait_for_selector(".sg-alert")
            await send_signal(patient, 2, "client.display_capture", {"api": "getDisplayMedia"})
            await send_signal(patient, 3, "client.media_recorder", {})
            await page.wait_for_function(
                "document.querySelectorAll('.sg-alert').length === 3")
            severities = await panel.locator(".sg-alert").evaluate_all(
                "els => els.map(e => e.dataset.severity)")
            assert severities == ["critical", "warning", "notice"]  # most important first
            critical = panel.locator('.sg-alert[data-severity="critical"]')
            text = await critical.inner_text()
            assert "Screen or tab capture, then a recorder, in the call page" in text
            assert "A screen or tab capture was started inside the call page" in text  # plain
            assert "Confidence 90 %" in text
            assert "Restate the recording policy agreed for this session." in text
            assert "The screenshot keys PrintScreen were pressed" in await panel.locator(
                '.sg-alert[data-severity="notice"]').inner_text()
            await page.wait_for_function(
                "document.querySelector('[aria-live=assertive]').textContent"
                ".includes('Screen or tab capture')")
            polite = page.locator('[aria-live="polite"]')
            assert await polite.get_attribute("role") == "status"

            # Acknowledge with the keyboard.
            ack = critical.locator('[data-action="ack"]')
            await ack.focus()
            await page.keyboard.press("Enter")
            await page.wait_for_selector('.sg-alert[data-severity="critical"][data-acked="true"]')
            # Focus stays with the alert after it re-renders, and Tab moves on in order.
            focused = "document.activeElement.closest('.sg-alert')?.dataset.severity"
            assert await page.evaluate(focused) == "critical"
            assert await page.evaluate("document.activeElement.dataset.action") == "confirmed"
            await page.keyboard.press("Tab")
            assert await page.evaluate("document.activeElement.dataset.action") == (
                "false_positive")
            acked = await wait_entry(db, session, "ack", by="dr")
            critical_id = await critical.get_attribute("data-alert-id")
            assert acked["body"]["id"] == critical_id

            # Mark the notice a false alarm.
            warning = panel.locator('.sg-alert[data-severity="notice"]')
            await warning.locator('[data-action="false_positive"]').click()
            await warning.locator('[data-verdict="false_positive"]').wait_for()
            feedback = await wait_entry(db, session, "feedback", verdict="false_positive")
            assert feedback["body"]["id"] == await warning.get_attribute("data-alert-id")

            # The patient asks to record; the clinician approves.
            await patient.send(json.dumps({"type": "recording.request",
                                           "reason": "to review the exercises"}))
            request = panel.locator(".sg-request")
            await request.wait_for()
            assert "to review the exercises" in await request.inner_text()
            await request.locator('[data-action="approve"]').click()
            decision = await recv_until(patient, lambda m: m.get("type") == "recording.decision")
            assert decision["approved"] is True
            await wait_entry(db, session, "recording_decision", approve=True)
            await page.wait_for_function(
                "document.querySelector('.sg-details').innerText.includes('Patient may record')")

            # The clinician sets the policy back to "not allowed".
            await page.select_option("#sg-policy", "prohibited")
            await page.get_by_role("button", name="Change policy").click()
            consent = await recv_until(patient, lambda m: m.get("type") == "consent"
                                       and m.get("recording") == "prohibited")
            assert consent["monitoring"] == ["device", "audio", "video"]
            await wait_entry(db, session, "consent", recording="prohibited",
                             by="clinician:dr")
            await page.wait_for_function(
                "document.querySelector('.sg-details').innerText"
                ".includes('Recording not allowed')")
            await page.evaluate("document.activeElement.blur();"
                                " document.querySelector('sessionguard-panel').scrollTop = 0")
            shot = shot_path(tmp_path, "panel.png")
            await page.screenshot(path=str(shot))

        # The patient is gone: blind, with the reason.
        await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
        assert "p1 is disconnected" in await panel.locator(".sg-reasons").inner_text()

        # The report of this real session carries what the clinician did.
        await wait_entry(db, session, "status", blind=True, cause="patient_disconnected")
        response = await page.request.get(
            f"{sc.origin}/v1/sessions/{session}/report?format=json&token={clinician}")
        assert response.status == 200
        report = await response.json()
        counts = report["counts"]
        assert (counts["alerts"], counts["acknowledged"], counts["false_positive"]) == (3, 1, 1)
        assert report["recording_requests"][0]["decision"] == "approved"
        assert [c["recording"] for c in report["consent"]] == [
            "prohibited", "patient_allowed", "prohibited"]
        assert report["blind_periods"][-1].get("open") is True
        assert report["verification"]["ok"] is True
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size < 150_000


async def test_panel_resumes_after_a_sidecar_restart(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    session = "s-resume"
    device_only = {"monitoring": ["device"], "recording": "prohibited"}
    async with playwright_context(tmp_path / "profile") as ctx:
        async with live_sidecar(db, engine=ScriptedEngine()) as sc:
            port = sc.port
            page = await ctx.new_page()
            clinician = sc.token(session, "dr", "clinician", FULL)
            await page.goto(f"{sc.origin}/panel/panel.html?token={clinician}")
            await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
            async with websockets.connect(
                    f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', device_only)}"
            ) as patient:
                await send_signal(patient, 1, "client.visibility", {"state": "hidden"})
                await page.wait_for_selector(".sg-alert")
                # What is not watched is said, not hidden.
                await send_signal(patient, 2, "client.focus", {"focused": False})
                await page.wait_for_function(
                    "document.querySelector('.sg-skips').textContent"
                    ".includes('camera-covered (needs video)')")
                # ... and so is the session's limit of alerts, once reached
                await send_signal(patient, 3, "client.key", {"combo": "Limit"})
                await page.wait_for_function(
                    "document.querySelector('.sg-skips').textContent.startsWith("
                    "'Alert limit reached: this session has raised 200 alerts and raises no "
                    "more')")
        # The sidecar is gone: the panel must not claim monitoring is on.
        await page.wait_for_selector('sessionguard-panel[data-state="offline"]')
        sent: list[str] = []
        page.on("websocket", lambda ws: ws.on("framesent", lambda f: sent.append(str(f))))
        async with live_sidecar(db, port=port, engine=ScriptedEngine()) as sc2:
            patient_token = sc2.token(session, "p1", "patient", device_only)
            async with websockets.connect(f"{sc2.ws_url}?token={patient_token}") as patient:
                await send_signal(patient, 10, "client.key", {"combo": "PrintScreen"})
                await page.wait_for_function(
                    "document.querySelectorAll('.sg-alert').length === 2", timeout=20_000)
        resumes = [json.loads(f) for f in sent if '"resume"' in f]
        assert {"type": "resume", "after": 1} in resumes
        ids = await page.locator(".sg-alert").evaluate_all(
            "els => els.map(e => e.dataset.alertId)")
        assert len(set(ids)) == 2  # the first alert was not shown twice


async def test_panel_shows_a_media_limit_without_calling_it_blind(tmp_path: Path) -> None:
    from playwright.async_api import expect

    # The sidecar's media receiver reports narrowband audio (the live path is tested in
    # tests/server/test_media_server.py); here the panel's wording of it.
    async with live_sidecar(tmp_path / "audit.db", **MEDIA_ON) as sc, \
            playwright_context(tmp_path / "profile") as ctx:
        session = "s-limit"
        page = await ctx.new_page()
        clinician = sc.token(session, "dr", "clinician", FULL)
        await page.goto(f"{sc.origin}/panel/panel.html?token={clinician}")
        panel = page.locator("sessionguard-panel")
        patient_url = f"{sc.ws_url}?token={sc.token(session, 'p1', 'patient', FULL)}"
        async with websockets.connect(patient_url):
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            await sc.sidecar.media_status(session, "p1", "audio", "flowing")
            await sc.sidecar.media_limit(session, "p1", "audio", "lossy")
            await page.wait_for_selector('sessionguard-panel[data-state="limited"]')
            await expect(panel.locator(".sg-details")).to_contain_text("analysed with gaps")
            # a microphone muted in the page: it sends only silence
            await sc.sidecar.media_limit(session, "p1", "audio", "muted")
            await expect(panel.locator(".sg-details dd[data-gap='true']")).to_have_text(
                "sends only silence (muted?): sounds near the patient are not heard")
            assert "the microphone of patient p1 sends only silence (muted?)" in \
                await panel.locator(".sg-reasons").inner_text()
            await sc.sidecar.media_limit(session, "p1", "audio", "narrowband")
            await page.wait_for_selector('sessionguard-panel[data-state="limited"]')
            assert "with a limit" in await panel.locator(".sg-state").inner_text()
            assert "silence" not in await panel.locator(".sg-details").inner_text()
            reasons = await panel.locator(".sg-reasons").inner_text()
            assert "shutter sounds cannot be heard" in reasons
            assert "narrowband" in await panel.locator(".sg-details").inner_text()
            # an unknown limit from a broken receiver is ignored, not shown
            await sc.sidecar.media_limit(session, "p1", "video", "sideways")
            await sc.sidecar.media_limit(session, "p1", "audio", None)
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            assert await panel.locator(".sg-reasons").inner_text() == ""
            assert "narrowband" not in await panel.locator(".sg-details").inner_text()
            # an analysis thread that cannot keep up: a limit on the camera row
            await sc.sidecar.media_status(session, "p1", "video", "flowing")
            await sc.sidecar.media_limit(session, "p1", "video", "overloaded")
            await page.wait_for_selector('sessionguard-panel[data-state="limited"]')
            await expect(panel.locator(".sg-details")).to_contain_text(
                "analysed only in part (the sidecar is overloaded")
            assert "may come late or be missed" in await panel.locator(".sg-reasons").inner_text()
            await sc.sidecar.media_limit(session, "p1", "video", None)
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            # an analysis that keeps failing: blind, and the camera row says why
            await sc.sidecar.media_status(session, "p1", "video", "stopped")
            await sc.sidecar.media_limit(session, "p1", "video", "failed")
            await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
            await expect(panel.locator(".sg-details")).to_contain_text(
                "the sidecar's analysis of it keeps failing")
            await sc.sidecar.media_limit(session, "p1", "video", "absent")
            await expect(panel.locator(".sg-details")).to_contain_text(
                "not arriving (offered, but nothing came")
            await sc.sidecar.media_limit(session, "p1", "video", None)
            await sc.sidecar.media_status(session, "p1", "video", "flowing")
            await page.wait_for_selector('sessionguard-panel[data-state="on"]')
            # video the sidecar refused (too large): blind, and the panel says why
            await sc.sidecar.media_status(session, "p1", "video", "stopped")
            await sc.sidecar.media_limit(session, "p1", "video", "oversized")
            await page.wait_for_selector('sessionguard-panel[data-state="blind"]')
            await expect(panel.locator(".sg-details")).to_contain_text(
                "sent larger than the sidecar accepts")
            assert "larger or faster than the sidecar accepts" in await panel.locator(
                ".sg-reasons").inner_text()
