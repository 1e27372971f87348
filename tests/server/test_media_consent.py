"""The live media path and the session's consent and connections, through the server with a
real aiortc peer on loopback: a withdrawn scope stops being analysed at once, whatever the
audit store does, and a patient who leaves ends in one coherent status."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from signals.errors import StorageError
from tests.media_live.peers import GeneratedAudio, GeneratedVideo
from tests.server.conftest import Factory, recv_json, recv_type, token
from tests.server.test_media_server import MEDIA_ENV, VIDEO, noise, offer_over

BOTH = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
AUDIO_ONLY = {"monitoring": ["device", "audio"], "recording": "prohibited"}


def media_of(message: dict[str, Any], participant: str = "p1") -> dict[str, str] | None:
    for p in message.get("participants", []):
        if p["participant"] == participant:
            return dict(p["media"])
    return None


def tone(i: int) -> np.ndarray:
    """A seeded 440 Hz tone with noise, 20 ms at 48 kHz."""
    n = np.arange(960) + i * 960
    rng = np.random.default_rng(i)
    return (np.sin(2 * np.pi * 440 * n / 48_000) * 3000
            + rng.normal(0, 300, 960)).astype(np.int16)


async def ledger_caught_up(h: Any, session: str = "s1") -> None:
    """Wait until the ledger holds the statuses sent so far. A receiver reporting media
    ``flowing`` resumes only once that status is written; a read queued after the write is
    answered after it, so the receiver has moved on to its next frame by then (changing its
    consent while it waits makes it crash: a race of monitor/media.py, not tested here)."""
    await h.sidecar.store.entries(session, ["status"])


async def test_a_withdrawn_scope_stops_being_analysed_before_the_store_and_if_it_fails(
        serve: Factory) -> None:
    """A later patient token without video narrows the session's consent: its live receiver
    stops analysing video, and the patient's pages are told, before the ledger write, and
    so when that write fails. Video used to be analysed on, while the clinician's status
    showed the narrowed consent next to ``video: flowing``. The failure is still reported:
    the new channel is refused (1013), as for any write the store refuses."""
    h = await serve(env=MEDIA_ENV)
    c = await h.clinician()
    tab1 = await h.patient(consent=BOTH)
    pc = await offer_over(tab1, GeneratedVideo(noise(11), fps=10), GeneratedAudio(tone))
    try:
        await recv_type(c, "status", timeout=30,
                        where=lambda m: media_of(m) == {"audio": "flowing", "video": "flowing"})
        await ledger_caught_up(h)
        store = h.sidecar.store
        append = store.append
        writing, release = asyncio.Event(), asyncio.Event()

        async def held_then_failing(session: str, kind: str, at: int, body: Any) -> Any:
            if kind == "consent":
                writing.set()
                await release.wait()
                raise StorageError("disk full")
            return await append(session, kind, at, body)

        store.append = held_then_failing
        tab2 = await h.connect(token("s1", "p1", "patient", AUDIO_ONLY))
        await asyncio.wait_for(writing.wait(), 10)
        # while the write is pending: video analysis has stopped, and everyone is told
        stopped = await recv_type(c, "status", timeout=10,
                                  where=lambda m: (media_of(m) or {}).get("video") == "stopped")
        assert stopped["consent"]["monitoring"] == ["device", "audio"]
        assert media_of(stopped) == {"audio": "flowing", "video": "stopped"}
        assert stopped["blind"] is False  # what the consent covers still flows
        told = await recv_type(tab1, "consent", timeout=10)
        assert told["monitoring"] == ["device", "audio"]
        receiver = h.sidecar.media[("s1", "p1")]
        assert not receiver.consent.allows("video") and receiver.consent.allows("audio")
        assert receiver.media_state() == {"audio": "flowing", "video": "stopped"}
        assert not release.is_set()
        release.set()
        # the failed write: reported as before (the new channel is refused, in words)
        error = await recv_type(tab2, "error", timeout=10)
        assert error["code"] == "unavailable"
        with pytest.raises(ConnectionClosed):
            await recv_json(tab2)
        assert tab2.close_code == 1013
        store.append = append
        # the withdrawal stays in force: the receiver is not told otherwise
        assert h.sidecar.media[("s1", "p1")] is receiver
        assert not receiver.consent.allows("video")
        assert receiver.media_state()["video"] == "stopped"
        assert h.sidecar.sessions.get("s1").consent.monitoring == {"device", "audio"}
    finally:
        await pc.close()


async def test_a_patient_who_leaves_ends_in_one_status_without_stopped_media(
        serve: Factory) -> None:
    """The last channel of a patient with media closes: the clinician gets one status, the
    patient disconnected and its media ``none``, its limits gone. The receiver closed after
    the media was reset reported ``stopped`` on top of it: three statuses in a row, with
    "video from patient p1 has stopped" next to "patient p1 is disconnected"."""
    h = await serve(env=MEDIA_ENV)
    c = await h.clinician()
    p = await h.patient(consent=VIDEO)
    pc = await offer_over(p, GeneratedVideo(noise(12), fps=10))
    try:
        await recv_type(c, "status", timeout=30, where=lambda m: media_of(m) == {
            "audio": "none", "video": "flowing"})
        await ledger_caught_up(h)
        # a limit the receiver reported (as the analysis thread falling behind would)
        await h.sidecar.media_limit("s1", "p1", "video", "overloaded")
        await recv_type(c, "status", where=lambda m: m["limited"] != [])
        closed = asyncio.Event()
        close_channel = h.sidecar._closed

        async def closing(channel: Any) -> None:
            await close_channel(channel)
            closed.set()

        h.sidecar._closed = closing  # type: ignore[method-assign]
        await p.close()  # the peer connection stays up: the sidecar closes its side
        await asyncio.wait_for(closed.wait(), 30)
        # then a patient p2 connects: its status comes next
        await h.patient(participant="p2", consent=VIDEO)
        statuses = [await recv_type(c, "status", timeout=30)]
        while media_of(statuses[-1], "p2") is None:
            statuses.append(await recv_type(c, "status", timeout=30))
    finally:
        await pc.close()
    assert len(statuses) == 2, [s["reasons"] for s in statuses]
    gone = statuses[0]
    assert media_of(gone) == {"audio": "none", "video": "none"}
    assert gone["participants"][0]["limits"] == {} and gone["limited"] == []
    assert gone["reasons"] == ["no patient is connected", "patient p1 is disconnected"]
    assert ("s1", "p1") not in h.sidecar.media
