"""A muted microphone in a real headless Chromium: the page mutes the tracks it attached
through the SDK (``track.enabled = false``, what a call app's mute button does). Chromium
does not stop sending them: the camera sends black frames and the microphone digital
silence, so both stay ``flowing`` (never ``absent``). The clinician is told the microphone
sends only silence (the limit ``muted``) until it is unmuted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import (
    StaticSite,
    live_sidecar,
    playwright_context,
    recv_until,
    sdk_page,
    write_wav,
    write_y4m,
)
from tests.media_live.test_browser_media import CONSENT, is_status, limits_of

pytestmark = pytest.mark.browser

ATTACH_MUTED = """
const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
sg.stream = stream;
stream.getTracks().forEach((t) => { t.enabled = false; });  // muted from the start
guard.attachMedia(stream);
sg.attached = true;
"""
MICROPHONE = "window.sg.stream.getAudioTracks()[0]"


async def test_a_muted_microphone_in_chromium_is_a_limit_for_the_clinician(
        tmp_path: Path) -> None:
    camera = write_y4m(tmp_path / "room.y4m", 1.0, fps=10)
    voice = write_wav(tmp_path / "voice.wav", 1.0, freq=180.0, amplitude=0.2, noise=0.01)
    async with live_sidecar(tmp_path / "audit.db", media=True) as sc, \
            sc.clinician("visit-m") as clinician:
        seen: list[dict[str, Any]] = []
        with StaticSite() as site:
            token = sc.token("visit-m", "pat-m", "patient", CONSENT)
            url = site.add("call.html", sdk_page(sc.sdk_url, sc.ws_url, token,
                                                 after=ATTACH_MUTED))
            async with playwright_context(tmp_path / "profile", video_file=camera,
                                          audio_file=voice) as ctx:
                page = await ctx.new_page()
                await page.goto(url)
                # both muted tracks arrive (black frames, silence): flowing, not absent
                await recv_until(clinician, is_status("pat-m", audio="flowing",
                                                      video="flowing"), timeout=30, seen=seen)
                muted = await recv_until(
                    clinician, lambda m: m.get("type") == "status"
                    and limits_of(m, "pat-m") == {"audio": "muted"}, timeout=30, seen=seen)
                assert muted["blind"] is False
                assert any("sends only silence (muted?)" in r for r in muted["limited"])
                await page.evaluate(f"{MICROPHONE}.enabled = true")
                await recv_until(clinician, lambda m: m.get("type") == "status"
                                 and not limits_of(m, "pat-m")
                                 and is_status("pat-m", audio="flowing")(m),
                                 timeout=30, seen=seen)
                # muted during the call: the same limit again
                await page.evaluate(f"{MICROPHONE}.enabled = false")
                await recv_until(clinician, lambda m: m.get("type") == "status"
                                 and limits_of(m, "pat-m") == {"audio": "muted"},
                                 timeout=30, seen=seen)
        statuses = [m for m in seen if m.get("type") == "status"]
        assert not any("absent" in limits_of(m, "pat-m").values() for m in statuses)
