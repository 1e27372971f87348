"""Test helpers: a real aiortc client peer that sends generated media to a MediaReceiver."""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from monitor.media_ice import use_host_addresses

__all__ = ["GeneratedAudio", "GeneratedVideo", "connect_client"]

VIDEO_CLOCK = 90_000


class GeneratedVideo(MediaStreamTrack):
    """Frames made by ``picture(index)`` at ``fps``, paced in real time; ``paused`` holds them."""

    kind = "video"

    def __init__(self, picture: Callable[[int], npt.NDArray[np.uint8]], fps: int = 15) -> None:
        super().__init__()
        self._picture = picture
        self._fps = fps
        self._index = 0
        self._start: float | None = None
        self.resumed = asyncio.Event()
        self.resumed.set()

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        await self.resumed.wait()
        if self._start is None:
            self._start = loop.time()
        due = self._start + self._index / self._fps
        await asyncio.sleep(max(0.0, due - loop.time()))
        frame = av.VideoFrame.from_ndarray(self._picture(self._index), format="bgr24")
        frame.pts = self._index * VIDEO_CLOCK // self._fps
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._index += 1
        return frame

    def pause(self) -> None:
        self.resumed.clear()

    def resume(self) -> None:
        # Skip the paused interval so the pacing does not burst to catch up.
        if self._start is not None:
            loop = asyncio.get_running_loop()
            self._start = loop.time() - self._index / self._fps
        self.resumed.set()


class GeneratedAudio(MediaStreamTrack):
    """20 ms mono s16 frames at 48 kHz from ``samples(index) -> int16[960]``, real-time paced."""

    kind = "audio"

    def __init__(self, samples: Callable[[int], npt.NDArray[np.int16]]) -> None:
        super().__init__()
        self._samples = samples
        self._index = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._index * 0.02 - loop.time()))
        data = self._samples(self._index).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = self._index * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        self._index += 1
        return frame


async def connect_client(
    tracks: list[MediaStreamTrack],
    answer_offer: Callable[[str], object],
) -> RTCPeerConnection:
    """Offer ``tracks`` from a fresh client peer on 127.0.0.1 and apply the answer."""
    pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=[]))
    for track in tracks:
        pc.addTransceiver(track, direction="sendonly")
    with use_host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    try:
        answer = answer_offer(pc.localDescription.sdp)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, str)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    except BaseException:
        await pc.close()
        raise
    return pc
