"""``guard.attachMedia(stream)`` sends the consented tracks to the sidecar over WebRTC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    RECORD_SENT_FRAMES,
    LiveSidecar,
    StaticSite,
    live_sidecar,
    recv_until,
    sdk_page,
)

pytestmark = pytest.mark.browser

ATTACH = """
const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480},
                                                          audio: true});
await guard.attachMedia(stream);
"""

def video(state: str) -> Callable[[dict[str, Any]], bool]:
    """A clinician's ``status`` that shows a patient's video in ``state``."""
    return lambda m: m["type"] == "status" and any(
        p["media"]["video"] == state for p in m["participants"])


VIDEO_ONLY = {"monitoring": ["device", "video"], "recording": "prohibited"}



@dataclass
class MediaCall:
    """A media-enabled sidecar, the clinician's channel (its first status read) and the
    patient page's URL in a Chromium with a fake camera and microphone."""

    sc: LiveSidecar
    clinician: Any
    url: str
    ctx: Any

    async def page(self) -> Any:
        page = await self.ctx.new_page()
        await page.goto(self.url)
        return page


@contextlib.asynccontextmanager
async def media_call(chromium: Any, site: StaticSite, tmp_path: Path, session: str,
                     consent: dict[str, Any], after: str = ATTACH) -> AsyncIterator[MediaCall]:
    async with live_sidecar(tmp_path / "media.db", media=True) as sc:
        token = sc.token(session, "pat", "patient", consent)
        url = site.add(f"{session}.html", sdk_page(sc.sdk_url, sc.ws_url, token, after=after,
                                                   before=RECORD_SENT_FRAMES))
        ctx = await chromium(fake_media=True)
        async with sc.clinician(session) as clinician:
            await recv_until(clinician, lambda m: m["type"] == "status")
            yield MediaCall(sc, clinician, url, ctx)


def offers_of(frames: list[str]) -> list[str]:
    """The SDPs of the ``webrtc.offer`` messages among a page's sent frames."""
    return [m["sdp"] for m in map(json.loads, frames) if m["type"] == "webrtc.offer"]


async def test_attach_media_sends_only_consented_tracks_scaled_down(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    consent = {"monitoring": ["device", "video"], "recording": "prohibited"}
    async with live_sidecar(tmp_path / "media.db", media=True) as sc:
        token = sc.token("s-media", "pat", "patient", consent)
        url = site.add("media.html", sdk_page(sc.sdk_url, sc.ws_url, token, after=ATTACH,
                                              before=RECORD_SENT_FRAMES))
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
    assert params["fps"] == 5
    assert (w, h) == (640, 480) and params["scale"] == 2
    assert params["scale"] == pytest.approx(max(1.0, w / 320, h / 240))


ATTACH_TWO_CAMERAS = """
const cam = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
const canvas = document.createElement("canvas");
canvas.width = 320; canvas.height = 240;
const g = canvas.getContext("2d");
setInterval(() => { g.fillStyle = `hsl(${Date.now() % 360}, 50%, 50%)`;
                    g.fillRect(0, 0, 320, 240); }, 100);
const second = canvas.captureStream(10).getVideoTracks()[0];
sg.camera = cam.getVideoTracks()[0].id;
await guard.attachMedia(new MediaStream([...cam.getTracks(), second]));
"""


async def test_the_camera_is_sent_at_the_rate_the_sidecar_analyses(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """The SDK sends the camera at 5 fps, the rate the video analyzer looks at pictures
    (``cheap_fps``): no picture crosses the patient's uplink only to be decoded and thrown
    away (at 10 fps half of them were), and nearly every one that arrives is analysed, though
    the browser's capture times wobble around 200 ms apart (the analyzer took a picture only
    a full 200 ms after the last one: 84 % of this stream)."""
    async with media_call(chromium, site, tmp_path, "s-rate", VIDEO_ONLY) as call:
        await call.page()     # Chromium's fake camera: 640x480 at 20 fps or more
        await recv_until(call.clinician, video("flowing"), timeout=30)
        registry = call.sc.sidecar.metrics.registry

        def frames(outcome: str) -> float:
            return registry.get_sample_value(
                "sessionguard_media_frames_total",
                {"kind": "video", "outcome": outcome}) or 0.0

        received, analysed = frames("received"), frames("analysed")
        start, deadline = time.monotonic(), time.monotonic() + 30
        while frames("received") - received < 40 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)   # the receiver reports its counts every 0.5 s
        got = frames("received") - received
        rate = got / (time.monotonic() - start)
        share = (frames("analysed") - analysed) / got
    assert got >= 40
    assert rate < 7, f"{rate:.1f} pictures a second sent"
    assert share >= 0.92, f"{share:.0%} of the pictures received analysed"


async def test_attach_media_sends_one_track_of_each_kind(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """A page that hands over a stream with two video tracks (a camera and a canvas) gets one
    camera and one microphone sent: the sidecar refuses an offer with two of a kind."""
    consent = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
    async with media_call(chromium, site, tmp_path, "s-two", consent,
                          after=ATTACH_TWO_CAMERAS) as call:
        page = await call.page()
        await recv_until(call.clinician, lambda m: m["type"] == "status" and any(
            p["media"] == {"audio": "flowing", "video": "flowing"}
            for p in m["participants"]), timeout=30)
        [offer] = offers_of(await page.evaluate("window.sentFrames"))
        assert offer.count("m=video") == 1 and offer.count("m=audio") == 1
        sent = await page.evaluate("""() => window.sg.guard._pc.getSenders()
            .filter((s) => s.track).map((s) => [s.track.kind, s.track.id])""")
        camera = await page.evaluate("window.sg.camera")
        assert sorted(kind for kind, _id in sent) == ["audio", "video"]
        assert ["video", camera] in sent  # the first video track: the camera, not the canvas


async def test_attaching_a_new_stream_restarts_the_media(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """A page that switches camera calls ``attachMedia`` again: the SDK makes a new peer
    connection, the sidecar replaces its receiver, and the clinician sees the media stop and
    flow again (it used to stay stopped: the second offer was refused)."""
    async with media_call(chromium, site, tmp_path, "s-switch", VIDEO_ONLY) as call:
        page = await call.page()
        await recv_until(call.clinician, video("flowing"), timeout=30)
        await page.evaluate("""async () => {
            const s = await navigator.mediaDevices.getUserMedia({video: true});
            await window.sg.guard.attachMedia(s);
        }""")
        await recv_until(call.clinician, video("stopped"), timeout=30)
        again = await recv_until(call.clinician, video("flowing"), timeout=30)
    assert again["blind"] is False


async def test_a_media_connection_that_goes_down_is_offered_anew(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """The sidecar's side of the media connection goes away (here it is closed, as after a
    network loss or a failed connection): the page's peer connection becomes disconnected,
    the SDK offers anew after 5 s, and the clinician sees the video stop and flow again."""
    async with media_call(chromium, site, tmp_path, "s-down", VIDEO_ONLY) as call:
        page = await call.page()
        await recv_until(call.clinician, video("flowing"), timeout=30)
        await call.sc.sidecar.media[("s-down", "pat")].close()
        await recv_until(call.clinician, video("stopped"), timeout=30)
        again = await recv_until(call.clinician, video("flowing"), timeout=45)
        assert again["blind"] is False
        assert len(offers_of(await page.evaluate("window.sentFrames"))) == 2


async def test_a_second_tab_takes_the_media_and_the_first_does_not_take_it_back(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """Two tabs of one participant attach media. The second's offer wins; the first is told
    (``media_replaced``) and, when its own connection then goes down, does not offer again,
    so the two do not swap the media back and forth every few seconds."""
    async with media_call(chromium, site, tmp_path, "s-tabs", VIDEO_ONLY) as call:
        seen: list[dict[str, Any]] = []
        first = await call.page()
        await recv_until(call.clinician, video("flowing"), timeout=30)
        await call.page()
        await recv_until(call.clinician, video("stopped"), timeout=30)
        await recv_until(call.clinician, video("flowing"), timeout=30)
        await first.wait_for_function("window.sg.guard._mediaYielded === true")
        await first.wait_for_function(
            "['disconnected', 'failed'].includes(window.sg.guard._pc.connectionState)",
            timeout=30_000)
        # the SDK offers anew 5 s after its connection went down: watch twice that long
        with contextlib.suppress(TimeoutError):
            await recv_until(call.clinician, video("stopped"), timeout=10, seen=seen)
        assert len(offers_of(await first.evaluate("window.sentFrames"))) == 1
    assert not any(video("stopped")(m) for m in seen)


async def test_media_the_consent_stops_covering_stops_being_sent(
        chromium: Any, site: StaticSite, tmp_path: Path) -> None:
    """The session's consent narrows during the call (a later patient token covers video
    only): the sidecar stops analysing the audio at once, and the SDK offers anew without
    it, so the microphone no longer leaves the device."""
    import websockets

    both = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
    async with media_call(chromium, site, tmp_path, "s-narrow", both) as call:
        page = await call.page()
        await recv_until(call.clinician, lambda m: m["type"] == "status" and any(
            p["media"] == {"audio": "flowing", "video": "flowing"}
            for p in m["participants"]), timeout=30)
        other = call.sc.token("s-narrow", "pat-2", "patient", VIDEO_ONLY)
        async with websockets.connect(f"{call.sc.ws_url}?token={other}"):
            await page.wait_for_function("""window.sentFrames.filter(
                (f) => JSON.parse(f).type === "webrtc.offer").length === 2""",
                                         timeout=30_000)
            await recv_until(call.clinician, lambda m: m["type"] == "status" and any(
                p["participant"] == "pat" and p["media"]["video"] == "flowing"
                and p["media"]["audio"] != "flowing" for p in m["participants"])
                and m["consent"]["monitoring"] == ["device", "video"], timeout=30)
        first, second = offers_of(await page.evaluate("window.sentFrames"))
    assert "m=audio" in first and "m=video" in first
    assert "m=audio" not in second and "m=video" in second
