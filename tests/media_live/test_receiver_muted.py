"""A muted microphone (digital silence, still sent) against a MediaReceiver over a real aiortc
peer on 127.0.0.1 (Opus over real UDP): the limit ``muted`` while it lasts, whatever the
audio analyzer, cleared at the first sound."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monitor.media import MediaParams
from signals.consent import Consent
from signals.errors import MediaError

from .peers import GeneratedAudio, connect_client
from .test_receiver_loopback import Recorder, eventually, receiver

TONE = (np.sin(np.arange(960) * 2 * np.pi * 440 / 48_000) * 3000).astype(np.int16)
SILENCE = np.zeros(960, np.int16)
AUDIO = Consent(frozenset({"audio"}))


class MuteButton:
    """The samples a patient's microphone sends: a tone, or zeros while ``muted`` (what
    Chromium and aiortc send for a muted track)."""

    def __init__(self, muted: bool) -> None:
        self.muted = muted

    def __call__(self, _i: int) -> np.ndarray:
        return SILENCE if self.muted else TONE


async def test_a_microphone_sending_only_silence_is_the_limit_muted_until_it_sounds(
        cleanup: list[Any]) -> None:
    """The analyzer here (SilentAudio) has no limit of its own: the receiver watches the
    frames' peaks itself. Audio stays ``flowing`` (frames arrive and are analysed); the
    limit says the microphone carries nothing."""
    rec = Recorder()
    limits = rec.limits
    rx = receiver(rec, AUDIO, muted_after_s=1.0)
    cleanup.append(rx)
    button = MuteButton(muted=True)
    cleanup.append(await connect_client([GeneratedAudio(button)], rx.handle_offer))
    await eventually(lambda: ("audio", "muted") in limits)
    assert rx.media_state()["audio"] == "flowing"
    assert limits == [("audio", "muted")]
    button.muted = False  # unmuted: the first frame with sound clears it
    await eventually(lambda: limits[-1] == ("audio", None))
    button.muted = True  # muted again: reported again after another muted_after_s
    await eventually(lambda: limits[-1] == ("audio", "muted"))
    assert limits == [("audio", "muted"), ("audio", None), ("audio", "muted")]
    assert rec.statuses == [("audio", "flowing")]


async def test_sound_from_the_start_is_never_muted(cleanup: list[Any]) -> None:
    rec = Recorder()
    rx = receiver(rec, AUDIO, muted_after_s=0.5)
    cleanup.append(rx)
    cleanup.append(await connect_client([GeneratedAudio(MuteButton(muted=False))],
                                        rx.handle_offer))
    await eventually(lambda: rx.stats().get("audio", {}).get("received", 0) >= 100)  # 2 s
    assert rec.limits == []


@pytest.mark.parametrize("after_s", [0.0, -1.0, float("inf"), float("nan")])
def test_a_bad_muted_after_s_is_refused(after_s: float) -> None:
    with pytest.raises(MediaError, match="muted_after_s"):
        MediaParams(muted_after_s=after_s)
