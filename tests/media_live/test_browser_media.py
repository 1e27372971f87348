"""End to end in a real headless Chromium: the page loads the SDK, attaches its (fake, file
driven) camera and microphone, the sidecar's MediaReceiver analyses the WebRTC media, the
clinician channel gets the media ``status`` and the alert. Loopback only: Chromium gets
``--allow-loopback-in-peer-connection`` and the sidecar offers 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.media import IceConfig, MediaParams, MediaReceiver
from signals.consent import Consent
from signals.model import Signal
from tests.browser.harness import (
    LiveSidecar,
    StaticSite,
    live_sidecar,
    playwright_context,
    record_in_page,
    recv_until,
    sdk_page,
    write_wav,
    write_y4m,
)

from .analyzers import DarkVideo, SilentAudio

pytestmark = pytest.mark.browser

CONSENT = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
ATTACH = """
const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
sg.tracks = stream.getTracks().map((t) => t.kind).sort();
guard.attachMedia(stream);
sg.attached = true;
"""

SELECTED_PAIR = """(async () => {
  const stats = await window.sg.guard._pc.getStats();
  let pair = null;
  stats.forEach((r) => {
    if (r.type === "transport") pair = stats.get(r.selectedCandidatePairId);
  });
  const ip = (id) => { const c = stats.get(id); return c.address || c.ip; };
  return pair ? [ip(pair.localCandidateId), ip(pair.remoteCandidateId)] : null;
})()"""


def covered_camera(path: Path) -> Path:
    """A lens covered by a finger: near-black frames with a little sensor noise."""
    rng = np.random.default_rng(3)

    def frame(_i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.clip(rng.normal(18, 1.5, (240, 320)), 0, 255).astype(np.uint8)
        u = np.full((120, 160), 128, np.uint8)
        return y, u, u.copy()

    return write_y4m(path, 1.0, fps=10, frame=frame)


def media_of(msg: dict[str, Any], participant: str) -> dict[str, str]:
    for p in msg.get("participants", []):
        if p.get("participant") == participant:
            return dict(p.get("media", {}))
    return {}


def is_status(participant: str, **want: str) -> Callable[[dict[str, Any]], bool]:
    def check(msg: dict[str, Any]) -> bool:
        media = media_of(msg, participant)
        return msg.get("type") == "status" and all(media.get(k) == v for k, v in want.items())

    return check


def video_ended(participant: str) -> Callable[[dict[str, Any]], bool]:
    """A status telling the clinician ``participant``'s video ended: stopped while the page
    is still connected, or the patient left (media ``none``: the receiver closed with the
    channel reports nothing more)."""
    def check(msg: dict[str, Any]) -> bool:
        if msg.get("type") != "status":
            return False
        video = media_of(msg, participant).get("video")
        sdk = next((p.get("sdk") for p in msg.get("participants", [])
                    if p.get("participant") == participant), None)
        return video == "stopped" or (sdk == "disconnected" and video == "none")

    return check


@contextlib.asynccontextmanager
async def call_page(tmp_path: Path, sc: LiveSidecar, session: str,
                    participant: str, audio: Path | None = None) -> AsyncIterator[Any]:
    video = covered_camera(tmp_path / "covered.y4m")
    if audio is None:
        audio = write_wav(tmp_path / "voice.wav", 1.0, freq=180.0, amplitude=0.2, noise=0.01)
    with StaticSite() as site:
        token = sc.token(session, participant, "patient", CONSENT)
        url = site.add("call.html", sdk_page(sc.sdk_url, sc.ws_url, token, after=ATTACH))
        async with playwright_context(tmp_path / "profile", video_file=video,
                                      audio_file=audio) as ctx:
            page = await ctx.new_page()
            await page.goto(url)
            await page.wait_for_function("window.sg && window.sg.attached === true",
                                         timeout=20_000)
            yield page


class NoRules:
    """An engine with no rules (this test is about the media path, not alerting)."""

    def __init__(self) -> None:
        self.fed: list[Signal] = []

    def set_consent(self, session: str, consent: Consent, now: int) -> None:
        pass

    def feed(self, signal: Signal, now: int) -> None:
        self.fed.append(signal)

    def tick(self, now: int) -> None:
        pass

    def end_session(self, session: str) -> None:
        pass


async def test_browser_media_reaches_the_receiver_and_status_reaches_the_clinician(
    tmp_path: Path,
) -> None:
    """The media path itself, with small stand-in analyzers (the real ones run below)."""
    seen: list[Signal] = []
    receivers: list[MediaReceiver] = []

    def factory(sidecar: Any, session: str, participant: str, consent: Consent) -> MediaReceiver:
        async def on_signal(signal: Signal) -> None:
            seen.append(signal)
            await sidecar.media_signal(signal)

        async def on_status(kind: str, state: str) -> None:
            await sidecar.media_status(session, participant, kind, state)

        params = MediaParams(video_factory=lambda: DarkVideo(hold=1.0),
                             audio_factory=lambda: SilentAudio(hold=0.5))
        rx = MediaReceiver(session, participant, consent, params,
                           IceConfig(host_addresses=("127.0.0.1",)), on_signal, on_status,
                           sidecar.clock)
        receivers.append(rx)
        return rx

    engine = NoRules()
    async with live_sidecar(tmp_path / "audit.db", media=True, media_factory=factory,
                            engine=engine) as sc, \
            sc.clinician("visit-1") as clinician:
        async with call_page(tmp_path, sc, "visit-1", "pat-1") as page:
            assert await page.evaluate("sg.tracks") == ["audio", "video"]
            await recv_until(clinician, is_status("pat-1", audio="flowing", video="flowing"),
                             timeout=30)
            # The sidecar's end of the call is its configured 127.0.0.1 host candidate (Chromium's
            # end is whatever interface it has; with only lo it is 127.0.0.1 too).
            pairs: list[Any] = []

            async def selected() -> bool:
                pairs.append(await page.evaluate(SELECTED_PAIR))
                return pairs[-1] is not None

            await _until_async(selected)
            assert pairs[-1][1] == "127.0.0.1"
            # The covered camera is seen through VP8 at Chromium's real colours.
            rx = receivers[0]
            await _until(lambda: any(s.name == "video.obscured" for s in seen))
            obscured = next(s for s in seen if s.name == "video.obscured")
            assert obscured.session == "visit-1" and obscured.participant == "pat-1"
            assert obscured.source == "media" and obscured.data["mean_luma"] < 30
            assert rx.stats()["video"]["analysed"] > 0
            assert obscured in engine.fed  # the sidecar fed it to the rules engine
            # A microphone file with a noise floor is not digitally silent.
            assert not any(s.name == "audio.virtual_source" for s in seen)
            await page.evaluate("window.sg.guard.close()")
        await recv_until(clinician, video_ended("pat-1"), timeout=30)


async def _until_async(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_covered_camera_in_chromium_alerts_the_clinician(tmp_path: Path) -> None:
    """The whole product path: SDK → WebRTC → real detectors → rules → clinician alert."""
    async with live_sidecar(tmp_path / "audit.db", media=True) as sc, \
            sc.clinician("visit-2") as clinician:
        seen: list[dict[str, Any]] = []
        async with call_page(tmp_path, sc, "visit-2", "pat-2"):
            await recv_until(clinician, is_status("pat-2", video="flowing"), timeout=30,
                             seen=seen)
            alert = await recv_until(
                clinician,
                lambda m: m.get("type") == "alert"
                and any(e.get("signal") == "video.obscured" for e in m.get("evidence", [])),
                timeout=30, seen=seen)
        assert alert["participant"] == "pat-2" and alert["session"] == "visit-2"
        # the tone over a -40 dBFS noise floor is wideband: several seconds of it, no limit
        assert not any(limits_of(m, "pat-2") for m in seen if m.get("type") == "status")
        evidence = next(e for e in alert["evidence"] if e["signal"] == "video.obscured")
        assert 0 < evidence["data"]["confidence"] <= 1
        assert evidence["data"]["mean_luma"] < 30
        await recv_until(clinician, video_ended("pat-2"), timeout=30, seen=seen)


def limits_of(msg: dict[str, Any], participant: str) -> dict[str, str]:
    for p in msg.get("participants", []):
        if p.get("participant") == participant:
            return dict(p.get("limits", {}))
    return {}


def telephone_band_wav(path: Path) -> Path:
    """A microphone that carries nothing above 3.4 kHz (a headset in its telephone mode):
    espeak-ng speech (Debian ``espeak-ng``; speech, because the browser's noise suppression
    removes a steady noise within a second or two) low-passed at 3.4 kHz, as a 48 kHz wav."""
    from scipy import signal as sps

    from tests.media.corpus_audio import speech
    from tests.media.corpus_audio import write_wav as write_samples_wav

    voice = speech("Hello, can you hear me? I think the connection is a little slow today, "
                   "sorry about that. Shall we start where we left off last week?")
    x = sps.sosfilt(sps.butter(10, 3400, fs=48_000, output="sos"), voice)
    return write_samples_wav(path, x * 0.3 / (np.max(np.abs(x)) + 1e-9), 48_000)


async def test_a_narrowband_microphone_in_chromium_is_a_limit_for_the_clinician(
        tmp_path: Path) -> None:
    """Chromium's own audio path (its processing, Opus at 48 kHz) keeps a telephone-band
    microphone narrowband: the clinician's status says shutter sounds cannot be heard. The
    wideband tone of the test above raises no such limit (checked there)."""
    audio = telephone_band_wav(tmp_path / "telephone.wav")
    async with live_sidecar(tmp_path / "audit.db", media=True) as sc, \
            sc.clinician("visit-4") as clinician:
        seen: list[dict[str, Any]] = []
        async with call_page(tmp_path, sc, "visit-4", "pat-4", audio=audio):
            await recv_until(clinician, is_status("pat-4", audio="flowing"), timeout=30,
                             seen=seen)
            limited = await recv_until(
                clinician, lambda m: m.get("type") == "status"
                and limits_of(m, "pat-4") == {"audio": "narrowband"}, timeout=30, seen=seen)
        assert limited["blind"] is False
        assert any("shutter sounds cannot be heard" in r for r in limited["limited"])


def speech_with_shutters(path: Path) -> Path:
    """10 s of espeak-ng speech (Debian ``espeak-ng``) over a -60 dBFS room, with the camera
    shutter of Debian's ``sound-theme-freedesktop`` 3 dB over the speech at two moments, as a
    48 kHz wav the fake microphone loops (the shutters 2.5 and 7 s into it)."""
    from tests.media.corpus_audio import RATE, load_sound, room_noise, set_level, speech_bed
    from tests.media.corpus_audio import write_wav as write_samples_wav

    rng = np.random.default_rng(7)
    seconds = 10.0
    bed = speech_bed(rng, "heldout", seconds, -24.0)
    bed += room_noise(len(bed), rng, -60.0, "pink")
    shutter = set_level(load_sound("camera-shutter"), -21.0)
    for t in (2.5, 7.0):
        i = int(t * RATE)
        bed[i:i + len(shutter)] += shutter
    return write_samples_wav(path, bed, RATE)


async def test_a_shutter_in_chromiums_microphone_alerts_the_clinician(tmp_path: Path) -> None:
    """The audio half of the product path: a shutter sound in the microphone, through
    Chromium's own audio processing (echo cancellation, noise suppression, gain control: the
    SDK sends the track the page gives it) and Opus, reaches the clinician as an alert naming
    ``audio.shutter``. Speech around it raises no alert of its own."""
    audio = speech_with_shutters(tmp_path / "speech-shutter.wav")
    async with live_sidecar(tmp_path / "audit.db", media=True) as sc, \
            sc.clinician("visit-5") as clinician:
        seen: list[dict[str, Any]] = []
        async with call_page(tmp_path, sc, "visit-5", "pat-5", audio=audio):
            await recv_until(clinician, is_status("pat-5", audio="flowing"), timeout=30,
                             seen=seen)
            alert = await recv_until(
                clinician,
                lambda m: m.get("type") == "alert"
                and any(e.get("signal") == "audio.shutter" for e in m.get("evidence", [])),
                timeout=30, seen=seen)
        assert alert["participant"] == "pat-5" and alert["session"] == "visit-5"
        evidence = next(e for e in alert["evidence"] if e["signal"] == "audio.shutter")
        assert evidence["data"]["method"] == "click-cluster"
        assert 3 <= evidence["data"]["clicks"] <= 8
        assert 0.5 <= evidence["data"]["confidence"] <= 0.9
        # the speech around the shutters raised nothing of its own
        other = [m for m in seen if m.get("type") == "alert"
                 and not any(e.get("signal") == "audio.shutter" for e in m["evidence"])]
        assert not any(e.get("signal", "").startswith("audio.")
                       for m in other for e in m["evidence"])
        assert not any(limits_of(m, "pat-5") for m in seen if m.get("type") == "status")


def quiet_room_speech(path: Path) -> Path:
    """40 s of espeak-ng speech (Debian ``espeak-ng``) with pauses, over a quiet room's
    -75 dBFS floor (a good microphone in a still room), as a 48 kHz wav."""
    from tests.media.corpus_audio import RATE, room_noise, speech_bed
    from tests.media.corpus_audio import write_wav as write_samples_wav

    rng = np.random.default_rng(6)
    bed = speech_bed(rng, "heldout", 40.0, -24.0)
    bed += room_noise(len(bed), np.random.default_rng(1), -75.0, "pink")
    return write_samples_wav(path, bed, RATE)


async def test_a_quiet_room_through_chromiums_noise_suppression_is_not_a_virtual_source(
        tmp_path: Path) -> None:
    """Chromium's default noise suppression lowers a quiet room's -75 dBFS floor to about
    -91 dBFS in the pauses (measured on this path): under the first threshold, -90 dBFS,
    ``audio.virtual_source`` fired 3 s into the call, a false alarm in every quiet room. A
    virtual source's digital silence reaches the sidecar at about -112 dBFS."""
    from tests.browser.harness import stored_signals

    audio = quiet_room_speech(tmp_path / "quiet-room.wav")
    async with live_sidecar(tmp_path / "audit.db", media=True) as sc, \
            sc.clinician("visit-6") as clinician:
        async with call_page(tmp_path, sc, "visit-6", "pat-6", audio=audio):
            await recv_until(clinician, is_status("pat-6", audio="flowing"), timeout=30)
            receiver = sc.sidecar.media[("visit-6", "pat-6")]
            # 20 s of the microphone analysed (20 ms frames): the old threshold had reported
            # by 13 s (its 3 s of "digital" silence gathered from 7 pauses)
            await _until(lambda: receiver.stats()["audio"]["analysed"] >= 1000, timeout=60)
        names = {s["signal"] for s in stored_signals(sc.db, "visit-6")}
        assert "audio.virtual_source" not in names


async def test_the_sdk_offers_its_media_again_after_the_sidecar_was_busy(
        tmp_path: Path) -> None:
    """``media.max_calls`` reached: the page's offer is refused with ``media_busy`` (the
    clinician is told); the SDK offers again after the ``retry_after_s`` it was given and,
    the other call gone, its media is analysed."""
    import json

    import websockets
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from monitor.media_ice import use_host_addresses
    from tests.media_live.peers import GeneratedVideo

    async with live_sidecar(tmp_path / "audit.db", media=True,
                            media_config={"max_calls": 1, "busy_retry_s": 1}) as sc, \
            sc.clinician("visit-7") as clinician:
        # another call holds the one analysis slot: an aiortc peer on its own channel
        other_token = sc.token("visit-other", "pat-other", "patient", CONSENT)
        other = await websockets.connect(f"{sc.ws_url}?token={other_token}")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            assert json.loads(await other.recv())["type"] == "consent"
            pc.addTrack(GeneratedVideo(lambda _i: np.full((120, 160, 3), 90, np.uint8)))
            with use_host_addresses(("127.0.0.1",)):
                await pc.setLocalDescription(await pc.createOffer())
            await other.send(json.dumps({"type": "webrtc.offer",
                                         "sdp": pc.localDescription.sdp}))
            while (answer := json.loads(await other.recv()))["type"] != "webrtc.answer":
                pass
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            async with call_page(tmp_path, sc, "visit-7", "pat-7"):
                told = await recv_until(
                    clinician, lambda m: m.get("type") == "status"
                    and limits_of(m, "pat-7").get("video") == "busy", timeout=30)
                assert told["blind"] is True
                await pc.close()
                await other.close()
                await recv_until(clinician, is_status("pat-7", video="flowing"), timeout=30)
        finally:
            await pc.close()
            await other.close()


async def test_analyze_reads_a_recording_the_browser_made(tmp_path: Path) -> None:
    """What a platform keeps of a call is often a MediaRecorder WebM, whose header declares
    no duration (Chromium's does not) and which has no index. ``analyze`` reads it to the
    end and finds the covered camera the recording shows, up to the recording's end."""
    from monitor.commands.analyze import analyze_file
    from monitor.mediafile import probe

    video = covered_camera(tmp_path / "covered.y4m")
    audio = write_wav(tmp_path / "voice.wav", 1.0, freq=180.0, amplitude=0.2, noise=0.01)
    with StaticSite() as site:
        url = site.add("rec.html", "<!doctype html><title>recorder</title>")
        async with playwright_context(tmp_path / "profile", video_file=video,
                                      audio_file=audio) as ctx:
            page = await ctx.new_page()
            await page.goto(url)
            data = await record_in_page(page, {"video": True, "audio": True}, 4.0,
                                        mimeType="video/webm;codecs=vp8,opus")
    recording = tmp_path / "call.webm"
    recording.write_bytes(data)
    info = probe(recording)
    assert info.has_video and info.has_audio
    result = analyze_file(recording)
    assert result.declared is None and 3.0 < result.duration < 6.0
    assert result.video_frames >= 12 and result.audio_chunks > 0
    [covered] = [d for d in result.detections if d.signal == "video.obscured"]
    assert covered.evidence["kind"] == "dark" and covered.t < 1.0
    assert covered.end == pytest.approx(result.duration, abs=0.5)
