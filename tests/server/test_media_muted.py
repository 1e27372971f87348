"""A muted microphone through the server: a real aiortc peer sends digital silence (what a
muted track sends: it never stops), then sound. The clinician's status says the microphone
sends only silence (the limit ``muted``, not blindness) and clears it when sound comes."""

from __future__ import annotations

import numpy as np

from tests.media_live.peers import GeneratedAudio
from tests.server.conftest import Factory, recv_type
from tests.server.test_media_server import AUDIO, audio_of, media_call, offer_over


async def test_a_muted_microphone_reaches_clinicians_as_a_limit_until_it_sounds(
        serve: Factory) -> None:
    _h, c, p = await media_call(serve, AUDIO)
    rng = np.random.default_rng(11)
    voice = np.clip(rng.standard_normal(48_000 * 10) * 2000, -32768, 32767).astype(np.int16)
    muted = {"on": True}

    def samples(i: int) -> np.ndarray:
        if muted["on"]:
            return np.zeros(960, np.int16)
        return voice[(i * 960) % len(voice):][:960]

    pc = await offer_over(p, GeneratedAudio(samples))
    try:
        flowing = await recv_type(c, "status", timeout=30,
                                  where=lambda m: audio_of(m)[0] == "flowing")
        assert flowing["limited"] == [] and audio_of(flowing)[1] == {}
        # MediaParams.muted_after_s (5 s) of nothing but zeros
        limited = await recv_type(c, "status", timeout=30,
                                  where=lambda m: audio_of(m)[1] == {"audio": "muted"})
        assert audio_of(limited)[0] == "flowing"
        assert limited["blind"] is False and limited["reasons"] == []
        [sentence] = limited["limited"]
        assert sentence.startswith("the microphone of patient p1 sends only silence (muted?)")
        assert "sounds near the patient" in sentence and "are not heard" in sentence
        muted["on"] = False
        cleared = await recv_type(c, "status", timeout=30,
                                  where=lambda m: audio_of(m)[1] == {})
        assert audio_of(cleared)[0] == "flowing"
        assert cleared["blind"] is False and cleared["limited"] == []
    finally:
        await pc.close()
