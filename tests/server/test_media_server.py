"""``webrtc.offer`` through the server to a real MediaReceiver, with a real aiortc peer; media
status reaches clinicians (flowing, then stopped: blind), and so does a limit of what the
media can carry (narrowband audio)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from scipy import signal as sps
from websockets.asyncio.client import ClientConnection

from monitor.media_ice import use_host_addresses
from tests.media_live.peers import GeneratedAudio, GeneratedVideo
from tests.server.conftest import Factory, Harness, make_config, recv_json, recv_type

VIDEO = {"monitoring": ["device", "video"], "recording": "prohibited"}
AUDIO = {"monitoring": ["device", "audio"], "recording": "prohibited"}
MEDIA_ENV = {"SESSIONGUARD_MEDIA_ENABLED": "true", "SESSIONGUARD_MEDIA_ICE_HOSTS": "127.0.0.1"}


async def media_call(serve: Factory, consent: dict[str, object], **kwargs: object
                     ) -> tuple[Harness, ClientConnection, ClientConnection]:
    """A media-enabled sidecar on loopback, a clinician (its first status read) and a patient
    with ``consent``; ``kwargs`` go to ``serve``."""
    h = await serve(**({"env": MEDIA_ENV} | kwargs))
    c = await h.clinician()
    p = await h.patient(consent=consent)
    await recv_type(c, "status")
    return h, c, p


def noise(seed: int) -> Callable[[int], np.ndarray]:
    """Seeded 160x120 noise pictures for :class:`GeneratedVideo`."""
    rng = np.random.default_rng(seed)
    return lambda _i: rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)


async def offer_over(patient: ClientConnection, *tracks: MediaStreamTrack
                     ) -> RTCPeerConnection:
    """A client peer sending ``tracks``, negotiated over the patient's channel (loopback)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN from tests
    try:
        for track in tracks:
            pc.addTrack(track)
        with use_host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
            await patient.send(json.dumps({"type": "webrtc.offer",
                                           "sdp": pc.localDescription.sdp}))
            answer = await recv_type(patient, "webrtc.answer", timeout=30)
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    except BaseException:
        await pc.close()
        raise
    return pc


def video_of(message: dict[str, object]) -> object:
    participants = message.get("participants")
    assert isinstance(participants, list)
    return participants[0]["media"]["video"] if participants else None


async def test_offer_answered_and_media_status_reaches_clinicians(serve: Factory) -> None:
    h = await serve(env=MEDIA_ENV)
    # no video consent: the offer is refused with a clear error
    nope = await h.patient("other", consent={"monitoring": ["device"]})
    await nope.send(json.dumps({"type": "webrtc.offer", "sdp": "v=0"}))
    assert (await recv_json(nope))["code"] == "not_consented"

    c = await h.clinician()
    p = await h.patient(consent=VIDEO)
    await recv_type(c, "status")
    track = GeneratedVideo(noise(1), fps=10)
    pc = await offer_over(p, track)
    registry = h.sidecar.metrics.registry

    def metric(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    try:
        flowing = await recv_type(c, "status", timeout=30,
                                  where=lambda m: video_of(m) == "flowing")
        assert flowing["blind"] is False
        assert metric("sessionguard_media_flowing", kind="video") == 1
        assert metric("sessionguard_media_flowing", kind="audio") == 0
    finally:
        await pc.close()
    stopped = await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "stopped")
    assert stopped["blind"] is True and any("video" in r for r in stopped["reasons"])
    # what the receiver counted reaches /metrics once the track has ended
    assert metric("sessionguard_media_flowing", kind="video") == 0
    received = metric("sessionguard_media_frames_total", kind="video", outcome="received")
    analysed = metric("sessionguard_media_frames_total", kind="video", outcome="analysed")
    assert received >= 1 and 1 <= analysed <= received
    assert metric("sessionguard_media_frames_total", kind="audio", outcome="received") == 0


def audio_of(message: dict[str, object]) -> tuple[object, object]:
    participants = message.get("participants")
    assert isinstance(participants, list)
    if not participants:
        return None, None
    return participants[0]["media"]["audio"], participants[0].get("limits")


async def test_narrowband_audio_reaches_clinicians_as_a_limit(serve: Factory) -> None:
    # A microphone that carries nothing above 3.4 kHz (a headset in its telephone mode):
    # seeded noise low-passed at 3.4 kHz, sent as 48 kHz Opus like any browser's.
    _h, c, p = await media_call(serve, AUDIO)
    rng = np.random.default_rng(3)
    sos = sps.butter(10, 3400, fs=48_000, output="sos")
    noise = sps.sosfilt(sos, rng.standard_normal(48_000 * 30)) * 3000
    pcm = np.clip(noise, -32768, 32767).astype(np.int16)
    track = GeneratedAudio(lambda i: pcm[(i * 960) % len(pcm):][:960])
    pc = await offer_over(p, track)
    try:
        flowing = await recv_type(c, "status", timeout=30,
                                  where=lambda m: audio_of(m)[0] == "flowing")
        assert flowing["limited"] == [] and audio_of(flowing)[1] == {}
        # after about 3 s of sound the band check decides
        limited = await recv_type(c, "status", timeout=30,
                                  where=lambda m: audio_of(m)[1] == {"audio": "narrowband"})
        assert limited["blind"] is False and limited["reasons"] == []
        assert len(limited["limited"]) == 1
        assert "shutter sounds cannot be heard" in limited["limited"][0]
    finally:
        await pc.close()
    stopped = await recv_type(c, "status", timeout=30,
                              where=lambda m: audio_of(m)[0] == "stopped")
    assert stopped["blind"] is True and stopped["limited"] == []


async def test_oversized_video_is_refused_and_the_clinician_is_told_why(
        serve: Factory, tmp_path: Path) -> None:
    # media.max_video_pixel_rate set below what this peer sends (160x120 at 10 fps)
    cfg = make_config(tmp_path, **MEDIA_ENV)
    _h, c, p = await media_call(serve, VIDEO, config=cfg.model_copy(update={
        "media": cfg.media.model_copy(update={"max_video_pixel_rate": 160 * 120 * 3})}))
    track = GeneratedVideo(noise(2), fps=10)
    pc = await offer_over(p, track)
    try:
        await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "flowing")
        refused = await recv_type(
            c, "status", timeout=30,
            where=lambda m: m["participants"] and m["participants"][0]["limits"]
            == {"video": "oversized"})
    finally:
        await pc.close()
    assert video_of(refused) == "stopped" and refused["blind"] is True
    assert refused["limited"] == []
    [reason] = [r for r in refused["reasons"] if "video" in r]
    assert "larger or faster than the sidecar accepts" in reason and "has stopped" not in reason


async def test_a_new_peer_connection_replaces_the_old_one(serve: Factory) -> None:
    """The SDK makes a new peer connection for every ``attachMedia`` (a camera switch, a
    connection that failed): its offer gets a fresh receiver and the media flows again,
    where it used to be refused ("the WebRTC offer could not be used")."""
    h, c, p = await media_call(serve, VIDEO)
    picture = noise(4)
    first = await offer_over(p, GeneratedVideo(picture, fps=10))
    try:
        await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "flowing")
    finally:
        await first.close()  # the page closed it to attach a new stream
    second = await offer_over(p, GeneratedVideo(picture, fps=10))
    try:
        await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "stopped")
        again = await recv_type(c, "status", timeout=30,
                                where=lambda m: video_of(m) == "flowing")
        assert again["blind"] is False
        # and a renegotiation of that same connection keeps its receiver (the same peer)
        receiver = h.sidecar.media[("s1", "p1")]
        await second.setLocalDescription(await second.createOffer())
        await p.send(json.dumps({"type": "webrtc.offer", "sdp": second.localDescription.sdp}))
        answer = await recv_type(p, "webrtc.answer", timeout=30)
        await second.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert h.sidecar.media[("s1", "p1")] is receiver and not receiver.closed
    finally:
        await second.close()
    await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "stopped")


async def test_a_second_tab_takes_the_media_and_the_first_is_told(serve: Factory) -> None:
    """Two open channels of one participant (two tabs) each attaching media: the later offer
    wins and the earlier channel gets ``media_replaced``, so its SDK does not offer again and
    take the media back (the two would otherwise swap it back and forth)."""
    h = await serve(env=MEDIA_ENV)
    c = await h.clinician()
    tab1 = await h.patient(consent=VIDEO)
    tab2 = await h.patient(consent=VIDEO)
    await recv_type(c, "status")
    picture = noise(5)
    first = await offer_over(tab1, GeneratedVideo(picture, fps=10))
    second = None
    try:
        await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "flowing")
        second = await offer_over(tab2, GeneratedVideo(picture, fps=10))
        replaced = await recv_type(tab1, "error", timeout=30)
        assert replaced["code"] == "media_replaced"
        await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "flowing")
        # a new offer of the tab that has the media (a camera switch) tells nobody
        third = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            third.addTrack(GeneratedVideo(picture, fps=10))
            with use_host_addresses(("127.0.0.1",)):
                await third.setLocalDescription(await third.createOffer())
            await tab2.send(json.dumps({"type": "webrtc.offer",
                                        "sdp": third.localDescription.sdp}))
            seen = [await recv_json(tab2, timeout=30)]
            while seen[-1]["type"] != "webrtc.answer":
                seen.append(await recv_json(tab2, timeout=30))
        finally:
            await third.close()
        assert not [m for m in seen if m["type"] == "error"]
    finally:
        await first.close()
        if second is not None:
            await second.close()


async def test_a_failed_offer_from_a_new_peer_leaves_the_call_alone(serve: Factory) -> None:
    h, c, p = await media_call(serve, VIDEO)
    picture = noise(6)
    call = await offer_over(p, GeneratedVideo(picture, fps=10))
    try:
        await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "flowing")
        receiver = h.sidecar.media[("s1", "p1")]
        # another peer connection offers two cameras: refused, and the call goes on
        bad = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            for _ in range(2):
                bad.addTrack(GeneratedVideo(picture, fps=10))
            await bad.setLocalDescription(await bad.createOffer())
            await p.send(json.dumps({"type": "webrtc.offer", "sdp": bad.localDescription.sdp}))
            error = await recv_type(p, "error", timeout=30)
        finally:
            await bad.close()
        assert error["code"] == "bad_offer" and "2 video streams" in error["message"]
        assert h.sidecar.media[("s1", "p1")] is receiver and not receiver.closed
        assert receiver.media_state()["video"] == "flowing"
    finally:
        await call.close()


async def test_offers_are_rate_limited_per_participant(serve: Factory) -> None:
    """Each offer from a new peer builds a new connection (about 7 ms of CPU): a participant
    gets three at once, then one every 2 s; others are not affected."""
    from monitor.server import OFFER_BURST

    h, _c, p = await media_call(serve, VIDEO)
    codes = []
    for _ in range(OFFER_BURST + 1):
        await p.send(json.dumps({"type": "webrtc.offer", "sdp": "v=0\r\nnot sdp at all"}))
        codes.append((await recv_type(p, "error"))["code"])
    assert codes == ["bad_offer"] * OFFER_BURST + ["rate_limited"]
    other = await h.patient(participant="p2", consent=VIDEO)
    await other.send(json.dumps({"type": "webrtc.offer", "sdp": "v=0\r\nnot sdp at all"}))
    assert (await recv_type(other, "error"))["code"] == "bad_offer"


async def test_two_tabs_offering_at_once_leave_one_receiver_running(serve: Factory) -> None:
    """Two tabs of one patient offer at the same moment: the later answer wins, the other
    tab is told, and no receiver is left running outside the sidecar's view (one was,
    analysing video after its consent was withdrawn, until its peer hung up)."""
    from monitor.server import _default_media

    made: list[Any] = []

    def factory(*args: Any) -> Any:
        made.append(_default_media(*args))
        return made[-1]

    h, _c, tab_a = await media_call(serve, VIDEO, media_factory=factory)
    tab_b = await h.patient(consent=VIDEO)
    calls = await asyncio.gather(offer_over(tab_a, GeneratedVideo(noise(7), fps=10)),
                                 offer_over(tab_b, GeneratedVideo(noise(8), fps=10)))
    try:
        told = [asyncio.create_task(recv_type(ws, "error", timeout=20))
                for ws in (tab_a, tab_b)]
        done, pending = await asyncio.wait(told, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        assert [t.result()["code"] for t in done] == ["media_replaced"]
        running = [r for r in made if not r.closed]
        assert len(made) == 2 and running == list(h.sidecar.media.values())
    finally:
        for call in calls:
            await call.close()


async def test_an_offer_aiortc_chokes_on_is_a_bad_offer_not_an_internal_error(
        serve: Factory) -> None:
    both = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
    _h, _c, p = await media_call(serve, both)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTrack(GeneratedVideo(noise(9), fps=10))
        pc.addTrack(GeneratedAudio(lambda _i: np.zeros(960, np.int16)))
        with use_host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        # a mid that the BUNDLE group does not list: aiortc raised AttributeError, then again
        # while the sidecar closed the half-made peer, and the patient got "internal"
        sdp = pc.localDescription.sdp.replace("a=mid:0\r\n", "a=mid:zz\r\n")
        assert "a=mid:zz" in sdp
        await p.send(json.dumps({"type": "webrtc.offer", "sdp": sdp}))
        error = await recv_type(p, "error", timeout=30)
        assert error["code"] == "bad_offer"
    finally:
        await pc.close()


async def test_calls_past_media_max_calls_wait_and_their_clinician_is_told(
        serve: Factory, tmp_path: Path) -> None:
    """One analysis thread serves every call: past ``media.max_calls`` a call's offer is
    refused for now (``media_busy``, with when to offer again) and its clinician is told,
    instead of every call's analysis falling behind. A new peer of a call already analysed
    still replaces its own; when a call ends, the waiting call's next offer is answered."""
    h, c1, p1 = await media_call(serve, VIDEO, env=MEDIA_ENV | {
        "SESSIONGUARD_MEDIA_MAX_CALLS": "1"})
    first = await offer_over(p1, GeneratedVideo(noise(5), fps=10))
    c2 = await h.clinician("s2")
    p2 = await h.patient("s2", "p2", consent=VIDEO)
    await recv_type(c2, "status")
    waiting: list[RTCPeerConnection] = []
    try:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        waiting.append(pc)
        pc.addTrack(GeneratedVideo(noise(6), fps=10))
        with use_host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
        await p2.send(json.dumps({"type": "webrtc.offer", "sdp": pc.localDescription.sdp}))
        busy = await recv_type(p2, "error")
        assert busy["code"] == "media_busy" and busy["retry_after_s"] == 60
        told = await recv_type(c2, "status", where=lambda m: m["participants"][0]["limits"]
                               == {"video": "busy"})
        assert video_of(told) == "stopped" and told["blind"] is True
        assert any("media.max_calls" in r for r in told["reasons"])
        assert len(h.sidecar.media) == 1
        # the call analysed now may still replace its own peer connection
        second = await offer_over(p1, GeneratedVideo(noise(7), fps=10))
        await first.close()
        first = second
        # the first call ends: the waiting one gets in at its next offer
        await p1.close()
        await recv_type(c1, "status", where=lambda m: m["participants"][0]["sdk"]
                        == "disconnected")
        waiting.append(await offer_over(p2, GeneratedVideo(noise(8), fps=10)))
        flowing = await recv_type(c2, "status", timeout=30,
                                  where=lambda m: video_of(m) == "flowing")
        assert flowing["participants"][0]["limits"] == {} and flowing["blind"] is False
    finally:
        await first.close()
        for pc in waiting:
            await pc.close()


async def test_two_calls_offering_at_once_do_not_both_take_the_last_place(
        serve: Factory) -> None:
    """An offer is answered over a few awaits (ICE gathering): counting only the calls
    already answered let two calls offering at the same moment both past ``max_calls``."""
    h = await serve(env=MEDIA_ENV | {"SESSIONGUARD_MEDIA_MAX_CALLS": "1"})
    patients = [await h.patient(s, f"p-{s}", consent=VIDEO) for s in ("s1", "s2")]
    peers: list[RTCPeerConnection] = []
    try:
        for _ in patients:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            peers.append(pc)
            pc.addTrack(GeneratedVideo(noise(9), fps=10))
            with use_host_addresses(("127.0.0.1",)):
                await pc.setLocalDescription(await pc.createOffer())
        await asyncio.gather(*(p.send(json.dumps({"type": "webrtc.offer",
                                                  "sdp": pc.localDescription.sdp}))
                               for p, pc in zip(patients, peers, strict=True)))

        async def outcome(p: ClientConnection) -> str:
            while (m := await recv_json(p, timeout=30))["type"] not in ("webrtc.answer",
                                                                        "error"):
                pass
            return "answered" if m["type"] == "webrtc.answer" else str(m["code"])

        results = await asyncio.gather(*(outcome(p) for p in patients))
        assert sorted(results) == ["answered", "media_busy"]
        assert len(h.sidecar.media) == 1
    finally:
        for pc in peers:
            await pc.close()
