"""``webrtc.offer`` through the server to a real MediaReceiver, with a real aiortc peer; media
status reaches clinicians (flowing, then stopped: blind)."""

from __future__ import annotations

import json

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from monitor.media_ice import use_host_addresses
from tests.media_live.peers import GeneratedVideo
from tests.server.conftest import Factory, recv_json, recv_type

VIDEO = {"monitoring": ["device", "video"], "recording": "prohibited"}


def video_of(message: dict[str, object]) -> object:
    participants = message.get("participants")
    assert isinstance(participants, list)
    return participants[0]["media"]["video"] if participants else None


async def test_offer_answered_and_media_status_reaches_clinicians(serve: Factory) -> None:
    h = await serve(env={"SESSIONGUARD_MEDIA_ENABLED": "true",
                         "SESSIONGUARD_MEDIA_ICE_HOSTS": "127.0.0.1"})
    # no video consent: the offer is refused with a clear error
    nope = await h.patient("other", consent={"monitoring": ["device"]})
    await nope.send(json.dumps({"type": "webrtc.offer", "sdp": "v=0"}))
    assert (await recv_json(nope))["code"] == "not_consented"

    c = await h.clinician()
    p = await h.patient(consent=VIDEO)
    await recv_type(c, "status")
    rng = np.random.default_rng(1)
    track = GeneratedVideo(lambda i: rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), fps=10)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN from tests
    try:
        pc.addTrack(track)
        with use_host_addresses(("127.0.0.1",)):
            await pc.setLocalDescription(await pc.createOffer())
            await p.send(json.dumps({"type": "webrtc.offer", "sdp": pc.localDescription.sdp}))
            answer = await recv_type(p, "webrtc.answer", timeout=30)
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        flowing = await recv_type(c, "status", timeout=30,
                                  where=lambda m: video_of(m) == "flowing")
        assert flowing["blind"] is False
    finally:
        await pc.close()
    stopped = await recv_type(c, "status", timeout=30, where=lambda m: video_of(m) == "stopped")
    assert stopped["blind"] is True and any("video" in r for r in stopped["reasons"])
