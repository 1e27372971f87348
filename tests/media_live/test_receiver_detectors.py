"""MediaReceiver with the project's real detectors over real WebRTC on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from monitor.media import IceConfig, MediaParams, MediaReceiver
from signals.consent import Consent
from signals.model import Signal

from .analyzers import SilentAudio
from .peers import GeneratedAudio, GeneratedVideo, connect_client

LOOPBACK = IceConfig(host_addresses=("127.0.0.1",))


async def test_real_video_analyzer_reports_a_covered_camera(cleanup: list[Any]) -> None:
    rng = np.random.default_rng(5)
    pictures = [np.clip(rng.normal(12, 2, (240, 320, 3)), 0, 255).astype(np.uint8)
                for _ in range(8)]
    found = asyncio.Event()
    signals: list[Signal] = []

    def on_signal(signal: Signal) -> None:
        signals.append(signal)
        if signal.name == "video.obscured":
            found.set()

    rx = MediaReceiver("s-real", "p-real", Consent(frozenset({"video"})),
                       MediaParams(audio_factory=SilentAudio), LOOPBACK, on_signal)
    cleanup.append(rx)
    cleanup.append(await connect_client(
        [GeneratedVideo(lambda i: pictures[i % len(pictures)], fps=10)], rx.handle_offer))
    await asyncio.wait_for(found.wait(), 20)
    obscured = next(s for s in signals if s.name == "video.obscured")
    assert obscured.source == "media" and 0 < obscured.data["confidence"] <= 1
    assert obscured.confidence == obscured.data["confidence"]
    assert all(s.name.startswith("video.") for s in signals)


def speech_with_digital_gaps(i: int) -> np.ndarray:
    """0.3 s of a voiced tone, then 0.7 s of exact digital zeros (a loopback device)."""
    if i % 50 < 15:
        t = (np.arange(960) + i * 960) / 48_000
        return np.asarray(0.3 * np.sin(2 * np.pi * 220 * t) * 32767, np.int16)
    return np.zeros(960, np.int16)


async def test_real_audio_analyzer_reports_a_virtual_microphone(cleanup: list[Any]) -> None:
    found = asyncio.Event()
    signals: list[Signal] = []

    def on_signal(signal: Signal) -> None:
        signals.append(signal)
        if signal.name == "audio.virtual_source":
            found.set()

    params = MediaParams(audio={"virtual_source": {"min_silence_s": 1.0}})
    rx = MediaReceiver("s-a", "p-a", Consent(frozenset({"audio"})), params, LOOPBACK, on_signal)
    cleanup.append(rx)
    cleanup.append(await connect_client([GeneratedAudio(speech_with_digital_gaps)],
                                        rx.handle_offer))
    await asyncio.wait_for(found.wait(), 20)
    virtual = next(s for s in signals if s.name == "audio.virtual_source")
    assert virtual.participant == "p-a" and virtual.data["gaps"] >= 2
    assert "audio.shutter" not in {s.name for s in signals}
