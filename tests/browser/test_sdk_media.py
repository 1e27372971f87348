"""``guard.attachMedia(stream)`` sends the consented tracks to the sidecar over WebRTC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import StaticSite, live_sidecar, recv_until, sdk_page

pytestmark = pytest.mark.browser

ATTACH = """
const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480},
                                                          audio: true});
await guard.attachMedia(stream);
"""

RECORD_FRAMES = """
window.sentFrames = [];
const origSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.sentFrames.push(String(data));
  return origSend.call(this, data); };
"""


async def test_attach_media_sends_only_consented_tracks_scaled_down(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    consent = {"monitoring": ["device", "video"], "recording": "prohibited"}
    async with live_sidecar(tmp_path / "media.db", media=True) as sc:
        token = sc.token("s-media", "pat", "patient", consent)
        url = site.add("media.html", sdk_page(sc.sdk_url, sc.ws_url, token, after=ATTACH,
                                              before=RECORD_FRAMES))
        ctx = await chromium(fake_media=True)   # Chromium's fake camera: 640x480
        async with sc.clinician("s-media") as clinician:
            await recv_until(clinician, lambda m: m["type"] == "status")
            page = await ctx.new_page()
            await page.goto(url)
            status = await recv_until(clinician, lambda m: m["type"] == "status" and any(
                p["media"]["video"] == "flowing" for p in m["participants"]), timeout=30)
        assert status["participants"][0]["media"]["audio"] != "flowing"
        frames = [json.loads(f) for f in await page.evaluate("window.sentFrames")]
        offers = [f for f in frames if f["type"] == "webrtc.offer"]
        assert len(offers) == 1
        sdp = offers[0]["sdp"]
        assert "m=video" in sdp and "m=audio" not in sdp   # no audio scope: no audio track
        assert "a=candidate" in sdp                         # non-trickle: candidates included
        params = await page.evaluate("""() => {
            const pc = window.sg.guard._pc;
            const s = pc.getSenders().find((x) => x.track && x.track.kind === "video");
            const e = s.getParameters().encodings[0];
            return {scale: e.scaleResolutionDownBy, fps: e.maxFramerate,
                    settings: s.track.getSettings()};
        }""")
    w, h = params["settings"]["width"], params["settings"]["height"]
    assert params["fps"] == 10
    assert (w, h) == (640, 480) and params["scale"] == 2
    assert params["scale"] == pytest.approx(max(1.0, w / 320, h / 240))
