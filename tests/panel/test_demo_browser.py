"""The demo, end to end: ``sessionguard demo`` started in-process, the patient and clinician
pages in a real headless Chromium driven over plain CDP (so the patient tab really becomes
hidden when the clinician tab comes to the front), and a visible alert in the panel."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from monitor.commands.demo import demo_running
from tests.browser.harness import CdpBrowser, CdpError, CdpPage

pytestmark = pytest.mark.browser


async def loaded(page: CdpPage, path: str) -> None:
    """Await the tab's navigation to ``path`` (a new target starts on about:blank, and an
    evaluation during the switch fails with "Execution context was destroyed")."""
    for _ in range(50):
        try:
            await page.wait_for(f"location.pathname === {json.dumps(path)}"
                                " && document.readyState === 'complete'")
            return
        except CdpError as exc:
            if "context was destroyed" not in str(exc):
                raise
    raise AssertionError(f"the tab never finished loading {path}")


async def test_demo_tab_switch_gives_a_visible_alert(tmp_path: Path) -> None:
    # The demo's own rules (the defaults plus its 3-second "page hidden" rule); media analysis
    # off to keep the test light (the page still gets the fake camera).
    async with demo_running(port=0, db=tmp_path / "demo.db", media_factory=None) as demo, \
            CdpBrowser.launch(tmp_path / "cdp", fake_media=True) as browser:
        patient = await browser.new_page(demo.patient_url)
        await loaded(patient, "/demo/patient.html")
        await patient.wait_for("document.body.dataset.connected === 'true'")
        notice = await patient.wait_for(
            "document.getElementById('notice-text').textContent.includes('monitored')"
            " && document.getElementById('notice-text').textContent")
        assert "Recording policy: recording is not permitted" in notice
        assert await patient.wait_for("document.body.dataset.media") in ("on", "none")
        assert await patient.evaluate("document.visibilityState") == "visible"

        # Opening the clinician page in a foreground tab hides the patient's tab.
        clinician = await browser.new_page(demo.clinician_url)
        await loaded(clinician, "/demo/clinician.html")
        title = await clinician.wait_for(
            "document.querySelector('.sg-alert .sg-alert-title')?.textContent")
        assert "switched away from the call" in title
        evidence = await clinician.evaluate(
            "document.querySelector('.sg-alert .sg-evidence').textContent")
        assert "switched away from the call tab" in evidence
        box = await clinician.evaluate(
            "(() => { const r = document.querySelector('.sg-alert').getBoundingClientRect();"
            " const v = document.querySelector('.video').getBoundingClientRect();"
            " return {visible: r.width > 0 && r.height > 0, overlaps: r.left < v.right"
            " && v.left < r.right && r.top < v.bottom && v.top < r.bottom}; })()")
        assert box == {"visible": True, "overlaps": False}  # beside the call, never over it

        # Media analysis is off here while the demo's consent covers camera and microphone:
        # the panel says so (the only reason). The patient closes the page: it says at once
        # that the patient is gone too.
        assert await clinician.evaluate("document.querySelector('sessionguard-panel')"
                                        ".dataset.state") == "blind"
        before = await clinician.evaluate("document.querySelector('.sg-reasons').textContent")
        assert before == ("this sidecar does not analyse camera or microphone (media analysis "
                          "is turned off): the consented audio and video are not watched")
        await patient.close()
        reasons = await clinician.wait_for(
            "document.querySelector('.sg-reasons').textContent.includes('disconnected')"
            " && document.querySelector('.sg-reasons').textContent")
        assert "disconnected" in reasons


async def test_demo_command_prints_both_urls_and_serves_the_pages(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SESSIONGUARD_SECRET"}  # it makes its own
    proc = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "demo", "--port", "0", "--db",
         str(tmp_path / "cli.db")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env=env, text=True)
    try:
        assert proc.stdout is not None
        urls: dict[str, str] = {}
        async with asyncio.timeout(60):
            while len(urls) < 2:
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, "demo exited before printing its URLs"
                for role in ("patient", "clinician"):
                    if line.strip().startswith(f"{role}:"):
                        urls[role] = line.split(":", 1)[1].strip()
        assert "/demo/patient.html?token=" in urls["patient"]
        assert "/demo/clinician.html?token=" in urls["clinician"]
        for url in urls.values():
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=10) as response:
                assert response.status == 200
                assert b"<!DOCTYPE html>" in response.read()
        health = urls["patient"].split("/demo/")[0] + "/healthz"
        with await asyncio.to_thread(urllib.request.urlopen, health, timeout=10) as response:
            assert json.load(response)["status"] == "ok"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(proc.wait, 30)
    assert code == 0  # a clean shutdown on Ctrl-C


async def test_demo_patient_page_does_not_call_an_unsent_request_declined(
        tmp_path: Path) -> None:
    """The patient page is what platforms copy: a request the SDK could not send (the page
    closed the connection) is said to be unsent, never "your clinician declined"."""
    async with demo_running(port=0, db=tmp_path / "demo.db", media_factory=None) as demo, \
            CdpBrowser.launch(tmp_path / "cdp") as browser:
        patient = await browser.new_page(demo.patient_url)
        await loaded(patient, "/demo/patient.html")
        await patient.wait_for("document.body.dataset.connected === 'true'")
        await patient.evaluate("window.sessionguardDemo.close(), "
                               "document.getElementById('request').click(), true")
        assert await patient.wait_for("document.body.dataset.request !== 'waiting'"
                                      " && document.body.dataset.request") == "unsent"
        words = await patient.evaluate("document.getElementById('request-state').textContent")
        assert "could not be sent" in words and "declined" not in words
