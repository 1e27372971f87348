"""MediaReceiver against a real aiortc client peer on 127.0.0.1 (VP8 + Opus over real UDP)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from monitor.media import IceConfig, MediaParams, MediaReceiver
from signals.consent import Consent
from signals.errors import MediaError
from signals.model import Signal

from .analyzers import DarkVideo, SilentAudio
from .peers import GeneratedAudio, GeneratedVideo, connect_client

LOOPBACK = IceConfig(host_addresses=("127.0.0.1",))
BOTH = Consent(frozenset({"audio", "video"}))


def black(_i: int) -> np.ndarray:
    return np.zeros((240, 320, 3), np.uint8)


def silence(_i: int) -> np.ndarray:
    return np.zeros(960, np.int16)


class Recorder:
    """Collects the receiver's callbacks; lets a test await a condition on them."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.statuses: list[tuple[str, str]] = []
        self.limits: list[tuple[str, str | None]] = []
        self._changed = asyncio.Condition()

    def on_limit(self, kind: str, limit: str | None) -> None:
        self.limits.append((kind, limit))

    async def on_signal(self, signal: Signal) -> None:
        async with self._changed:
            self.signals.append(signal)
            self._changed.notify_all()

    def on_status(self, kind: str, state: str) -> None:
        self.statuses.append((kind, state))
        asyncio.get_running_loop().create_task(self._poke())

    async def _poke(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def until(self, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)


async def eventually(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Await a condition on counters that have no event of their own (checked every 20 ms)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def receiver(rec: Recorder, consent: Consent, video: DarkVideo | None = None,
             audio: SilentAudio | None = None, **params: Any) -> MediaReceiver:
    media = MediaParams(
        video_factory=(lambda: video) if video else DarkVideo,
        audio_factory=(lambda: audio) if audio else SilentAudio,
        **params,
    )
    return MediaReceiver("s-1", "p-1", consent, media, LOOPBACK, rec.on_signal, rec.on_status,
                         on_limit=rec.on_limit)


async def test_covered_camera_and_silent_mic_are_detected_and_status_flows(
    cleanup: list[Any],
) -> None:
    rec, video, audio = Recorder(), DarkVideo(hold=1.0), SilentAudio(hold=0.5)
    rx = receiver(rec, BOTH, video, audio)
    cleanup.append(rx)
    vtrack = GeneratedVideo(black, fps=15)
    pc = await connect_client([vtrack, GeneratedAudio(silence)], rx.handle_offer)
    cleanup.append(pc)

    await rec.until(lambda: {s.name for s in rec.signals} >= {"video.obscured",
                                                             "audio.virtual_source"})
    assert ("video", "flowing") in rec.statuses and ("audio", "flowing") in rec.statuses
    assert rx.media_state() == {"audio": "flowing", "video": "flowing"}

    obscured = next(s for s in rec.signals if s.name == "video.obscured")
    assert obscured.source == "media" and obscured.session == "s-1"
    assert obscured.participant == "p-1"
    assert obscured.data["confidence"] == pytest.approx(0.8)
    assert isinstance(obscured.data["mean_luma"], float)  # numpy evidence made plain
    assert obscured.data["method"] == "test"
    silent = next(s for s in rec.signals if s.name == "audio.virtual_source")
    assert silent.data["duration_s"] >= 0.5
    assert silent.confidence == pytest.approx(0.7)

    # Frames arrived decoded at the sent size (as gray luma), at most ~10 per second, in
    # order, analysed off the event loop; audio arrived as float32 mono.
    assert video.shapes == {(240, 320)}
    assert all(b > a for a, b in zip(video.times, video.times[1:], strict=False))
    gaps = np.diff(video.times)
    assert gaps.min() >= 0.09 - 1e-6
    assert all(name.startswith("sessionguard-media") for name in video.threads)
    assert audio.dtypes == {"float32"} and audio.rates == {48_000}
    stats = rx.stats()
    assert stats["video"]["skipped"] > 0  # 15 fps sent, at most 10 analysed

    await rx.close()
    assert ("video", "stopped") in rec.statuses and ("audio", "stopped") in rec.statuses
    assert video.finished_at is not None and audio.finished_at is not None
    assert rx.media_state() == {"audio": "stopped", "video": "stopped"}


async def test_stall_reports_stopped_then_flowing_again(cleanup: list[Any]) -> None:
    rec = Recorder()
    rx = receiver(rec, Consent(frozenset({"video"})), stall_after_s=0.4)
    cleanup.append(rx)
    vtrack = GeneratedVideo(lambda i: np.full((240, 320, 3), 128, np.uint8), fps=10)
    cleanup.append(await connect_client([vtrack], rx.handle_offer))

    await rec.until(lambda: ("video", "flowing") in rec.statuses)
    vtrack.pause()
    await rec.until(lambda: ("video", "stopped") in rec.statuses)
    vtrack.resume()
    await rec.until(lambda: rec.statuses.count(("video", "flowing")) == 2)
    assert rec.statuses[:3] == [("video", "flowing"), ("video", "stopped"), ("video", "flowing")]
    assert rec.signals == []  # a grey picture is not covered


async def test_scope_without_consent_is_rejected_in_the_answer(cleanup: list[Any]) -> None:
    rec = Recorder()
    audio = SilentAudio(hold=0.1)
    rx = receiver(rec, Consent(frozenset({"video"})), audio=audio)
    cleanup.append(rx)
    answers: list[str] = []

    async def answer(sdp: str) -> str:
        answers.append(await rx.handle_offer(sdp))
        return answers[-1]

    cleanup.append(await connect_client([GeneratedVideo(black), GeneratedAudio(silence)], answer))
    await rec.until(lambda: ("video", "flowing") in rec.statuses)
    sections = answers[0].split("m=")[1:]
    audio_section = next(s for s in sections if s.startswith("audio"))
    video_section = next(s for s in sections if s.startswith("video"))
    assert "a=inactive" in audio_section and "a=recvonly" in video_section
    # Only loopback host candidates, no server-reflexive ones (no public STUN).
    candidates = [line for line in answers[0].splitlines() if line.startswith("a=candidate")]
    assert candidates and all(" 127.0.0.1 " in c and "typ host" in c for c in candidates)
    assert audio.seconds == 0.0 and rx.media_state()["audio"] == "none"
    assert "audio" not in rx.stats()


async def test_withdrawn_consent_stops_analysis_at_once(cleanup: list[Any]) -> None:
    rec = Recorder()
    video = DarkVideo(hold=0.3)
    rx = receiver(rec, BOTH, video=video)
    cleanup.append(rx)
    cleanup.append(await connect_client([GeneratedVideo(black)], rx.handle_offer))
    await rec.until(lambda: any(s.name == "video.obscured" for s in rec.signals))

    await rx.set_consent(Consent(frozenset({"audio"})))
    assert rec.statuses[-1] == ("video", "stopped")
    pushed = len(video.times)
    # Its receiving stops too: the track's reader ends (nothing of it is decoded any more;
    # frames were drained, decoded but unseen, until the patient's app offered anew).
    task = rx._tracks["video"].task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 10)
    assert len(video.times) == pushed
    assert rx.media_state()["video"] == "stopped"
    # Granting it again needs a new offer: nothing flows on this one.
    await rx.set_consent(BOTH)
    assert rx.media_state()["video"] == "stopped"


@pytest.mark.parametrize("sdp", ["", "v=0\r\nnot sdp at all", "x" * 70_000])
async def test_bad_offers_get_a_clear_error(sdp: str) -> None:
    rx = MediaReceiver("s", "p", BOTH, MediaParams(), LOOPBACK)
    with pytest.raises(MediaError) as info:
        await rx.handle_offer(sdp)
    assert "offer" in str(info.value)
    await rx.close()
    with pytest.raises(MediaError):
        await rx.handle_offer("v=0")


async def test_peer_hanging_up_ends_the_tracks(cleanup: list[Any]) -> None:
    rec = Recorder()
    rx = receiver(rec, BOTH)
    cleanup.append(rx)
    pc: RTCPeerConnection = await connect_client(
        [GeneratedVideo(black), GeneratedAudio(silence)], rx.handle_offer)
    await rec.until(lambda: {("video", "flowing"), ("audio", "flowing")} <= set(rec.statuses))
    await pc.close()
    await rec.until(lambda: {("video", "stopped"), ("audio", "stopped")} <= set(rec.statuses))


async def test_an_analyzer_that_cannot_start_refuses_the_offer(cleanup: list[Any]) -> None:
    def broken() -> DarkVideo:
        raise RuntimeError("model file missing")

    rx = MediaReceiver("s", "p", BOTH, MediaParams(video_factory=broken,
                                                   audio_factory=SilentAudio), LOOPBACK)
    cleanup.append(rx)
    with pytest.raises(MediaError, match="video analyzer could not start"):
        await connect_client([GeneratedVideo(black)], rx.handle_offer)
    assert rx.media_state() == {"audio": "none", "video": "none"}


async def test_video_over_the_pixel_rate_is_refused_and_audio_goes_on(
        cleanup: list[Any]) -> None:
    """A patient's app that sends more video than the sidecar accepts (here 320x240 at 15
    fps against a limit of 320x240 at 5) is not decoded any further: the video is reported
    stopped, then refused ("oversized"), while its audio keeps flowing and being analysed."""
    rec = Recorder()
    limits: list[tuple[str, str | None]] = []
    media = MediaParams(video_factory=DarkVideo, audio_factory=SilentAudio,
                        max_video_pixel_rate=320 * 240 * 5, oversize_after_s=0.5)
    rx = MediaReceiver("s-1", "p-1", BOTH, media, LOOPBACK, rec.on_signal, rec.on_status,
                       on_limit=lambda kind, limit: limits.append((kind, limit)))
    cleanup.append(rx)
    vtrack = GeneratedVideo(lambda i: np.full((240, 320, 3), 128, np.uint8), fps=15)
    cleanup.append(await connect_client([vtrack, GeneratedAudio(silence)], rx.handle_offer))

    await rec.until(lambda: ("video", "stopped") in rec.statuses)
    await eventually(lambda: ("video", "oversized") in limits)
    assert rec.statuses.index(("video", "flowing")) < rec.statuses.index(("video", "stopped"))
    assert rx.media_state() == {"audio": "flowing", "video": "stopped"}
    # decoding stopped: no further video frame arrives while audio still does
    received = rx.stats()["video"]["received"]
    audio_before = rx.stats()["audio"]["received"]
    await eventually(lambda: rx.stats()["audio"]["received"] > audio_before + 25)
    assert rx.stats()["video"]["received"] == received
    # under 1 s at 15 fps before the rate is over the limit, then 0.5 s over it
    assert 6 <= received <= 40
    assert rx.media_state()["audio"] == "flowing"


async def test_video_within_the_pixel_rate_is_not_refused(cleanup: list[Any]) -> None:
    rec = Recorder()
    limits: list[tuple[str, str | None]] = []
    media = MediaParams(video_factory=DarkVideo, audio_factory=SilentAudio,
                        max_video_pixel_rate=320 * 240 * 20, oversize_after_s=0.5)
    rx = MediaReceiver("s-1", "p-1", Consent(frozenset({"video"})), media, LOOPBACK,
                       rec.on_signal, rec.on_status,
                       on_limit=lambda kind, limit: limits.append((kind, limit)))
    cleanup.append(rx)
    vtrack = GeneratedVideo(lambda i: np.full((240, 320, 3), 128, np.uint8), fps=15)
    cleanup.append(await connect_client([vtrack], rx.handle_offer))
    await rec.until(lambda: ("video", "flowing") in rec.statuses)
    await eventually(lambda: rx.stats()["video"]["received"] >= 45)  # 3 s of it
    assert ("video", "stopped") not in rec.statuses and limits == []


async def test_an_offer_with_two_cameras_is_refused_and_a_working_call_goes_on(
        cleanup: list[Any]) -> None:
    """Two video sections would both be decoded while one is analysed: the other's frames
    would pile up unread (about 1 MB a second at 320x240 and 10 fps). Such an offer is
    refused with a clear error, also as a re-offer, which leaves the running call alone."""
    def grey(_i: int) -> np.ndarray:
        return np.full((240, 320, 3), 100, np.uint8)

    fresh = MediaReceiver("s", "p", BOTH, MediaParams(video_factory=DarkVideo,
                                                      audio_factory=SilentAudio), LOOPBACK)
    cleanup.append(fresh)
    with pytest.raises(MediaError, match="2 video streams; send at most one camera"):
        await connect_client([GeneratedVideo(grey), GeneratedVideo(grey)], fresh.handle_offer)
    assert fresh.media_state() == {"audio": "none", "video": "none"}

    rec = Recorder()
    rx = receiver(rec, BOTH)
    cleanup.append(rx)
    cleanup.append(await connect_client([GeneratedVideo(grey), GeneratedAudio(silence)],
                                        rx.handle_offer))
    await rec.until(lambda: {("video", "flowing"), ("audio", "flowing")} <= set(rec.statuses))
    second = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no public STUN from tests
    cleanup.append(second)
    for track in (GeneratedVideo(grey), GeneratedVideo(grey), GeneratedAudio(silence)):
        second.addTransceiver(track, direction="sendonly")
    await second.setLocalDescription(await second.createOffer())
    with pytest.raises(MediaError, match="2 video streams"):
        await rx.handle_offer(second.localDescription.sdp)
    before = rx.stats()["video"]["received"]
    await eventually(lambda: rx.stats()["video"]["received"] > before + 10)
    assert rx.media_state() == {"audio": "flowing", "video": "flowing"}
    assert ("video", "stopped") not in rec.statuses


async def switchable_call(cleanup: list[Any], video: Callable[[], Any], **params: Any
                          ) -> tuple[MediaReceiver, Recorder, list[tuple[str, str | None]],
                                     list[Any]]:
    """A receiver whose video analyzers come from ``video`` (each kept in the list returned,
    so the test can change how they behave), sent a grey 160x120 camera at 10 fps and a
    quiet hum (not digital silence: that would be the limit ``muted`` after 5 s); the
    limits it reports are collected."""
    rec = Recorder()
    limits: list[tuple[str, str | None]] = []
    made: list[Any] = []

    def factory() -> Any:
        made.append(video())
        return made[-1]

    media = MediaParams(video_factory=factory, audio_factory=SilentAudio, **params)
    rx = MediaReceiver("s-1", "p-1", BOTH, media, LOOPBACK, rec.on_signal, rec.on_status,
                       on_limit=lambda kind, limit: limits.append((kind, limit)))
    cleanup.append(rx)
    hum = (np.sin(np.arange(960) * 2 * np.pi * 100 / 48_000) * 300).astype(np.int16)
    tracks = [GeneratedVideo(lambda i: np.full((120, 160, 3), 128, np.uint8), fps=10),
              GeneratedAudio(lambda _i: hum)]
    cleanup.append(await connect_client(tracks, rx.handle_offer))
    return rx, rec, limits, made


class SlowVideo(DarkVideo):
    """Takes 0.3 s a picture while ``slow`` is set: an analysis thread that cannot keep up
    (as with more calls than one core can analyse)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = threading.Event()
        self.slow.set()

    def push(self, picture: np.ndarray, t: float) -> list[Any]:
        if self.slow.is_set():
            time.sleep(0.3)
        return super().push(picture, t)


async def test_an_analysis_thread_that_cannot_keep_up_is_reported_and_recovers(
        cleanup: list[Any]) -> None:
    """The audio's analysis jobs wait behind the slow video analysis: the audio reports the
    limit ``overloaded`` (its detections come late), and clears it once the thread keeps up."""
    rx, _rec, limits, made = await switchable_call(cleanup, SlowVideo, overload_wait_s=0.08,
                                                   overload_window_s=0.5)
    await eventually(lambda: ("audio", "overloaded") in limits)
    assert rx.media_state() == {"audio": "flowing", "video": "flowing"}
    for analyzer in made:
        analyzer.slow.clear()
    await eventually(lambda: [limit for kind, limit in limits if kind == "audio"][-1] is None)
    assert rx.media_state()["audio"] == "flowing"


class BrokenVideo(DarkVideo):
    """Raises on every picture while ``broken`` is set (e.g. frames it cannot take)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = threading.Event()
        self.broken.set()

    def push(self, picture: np.ndarray, t: float) -> list[Any]:
        if self.broken.is_set():
            raise ValueError("a video frame this analyzer cannot take")
        return super().push(picture, t)


async def test_a_track_whose_analysis_keeps_failing_is_not_reported_flowing(
        cleanup: list[Any]) -> None:
    """Frames arrive, but every analysis of them raises: the clinician must not read
    "flowing" (frames arriving *and* analysed). The video is reported stopped with the
    reason ``failed``, the audio goes on, and the video flows again once analysis works."""
    rx, rec, limits, made = await switchable_call(cleanup, BrokenVideo)
    await eventually(lambda: ("video", "failed") in limits)
    assert rx.media_state() == {"audio": "flowing", "video": "stopped"}
    assert rec.statuses.count(("video", "stopped")) == 1
    for analyzer in made:
        analyzer.broken.clear()
    await eventually(lambda: limits[-1] == ("video", None)
                     and rx.media_state()["video"] == "flowing")
    assert [state for kind, state in rec.statuses if kind == "video"] == [
        "flowing", "stopped", "flowing"]


class SilentVideo(GeneratedVideo):
    """A camera track that never delivers a frame (an app that sends none; Chromium sends
    black frames for a muted camera)."""

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def test_a_consented_track_from_which_nothing_arrives_is_reported_absent(
        cleanup: list[Any]) -> None:
    """Answered, consented, and no frame ever comes (a track the app sends nothing on, ICE
    that never gets through): the clinician saw "none" (never attached) and no blindness for as
    long as the call lasted. After ``first_media_s`` it is stopped, with the reason."""
    rec = Recorder()
    limits = rec.limits
    rx = receiver(rec, BOTH, first_media_s=1.0)
    cleanup.append(rx)
    cleanup.append(await connect_client([SilentVideo(black), GeneratedAudio(silence)],
                                        rx.handle_offer))
    await eventually(lambda: ("video", "absent") in limits)
    assert rx.media_state() == {"audio": "flowing", "video": "stopped"}
    assert ("audio", "absent") not in limits and ("video", "flowing") not in rec.statuses


class SilentMicrophone(GeneratedAudio):
    """A microphone track that never delivers a frame (an app that sends none)."""

    async def recv(self) -> Any:
        await asyncio.Event().wait()


async def test_a_withdrawn_kind_from_which_nothing_arrived_is_not_reported_absent(
        cleanup: list[Any]) -> None:
    """Video withdrawn before its first frame is not expected any more: the clinician was
    told its video "stopped", with the limit absent, for video the consent no longer covers
    (audio that never came, still consented, is)."""
    rec = Recorder()
    limits = rec.limits
    rx = receiver(rec, BOTH, first_media_s=1.0)
    cleanup.append(rx)
    cleanup.append(await connect_client([SilentVideo(black), SilentMicrophone(silence)],
                                        rx.handle_offer))
    await rx.set_consent(Consent(frozenset({"audio"})))
    await eventually(lambda: ("audio", "absent") in limits)  # the same watchdog pass
    assert ("video", "absent") not in limits and ("video", "stopped") not in rec.statuses
    assert rx.media_state() == {"audio": "stopped", "video": "none"}


class LeapingVideo(GeneratedVideo):
    """Black frames whose timestamps leap an hour ahead after the first second."""

    async def recv(self) -> Any:
        frame = await super().recv()
        if self._index > 10:
            frame.pts += 3600 * 90_000
        return frame


async def test_timestamps_that_leap_ahead_do_not_post_date_media_time(
        cleanup: list[Any]) -> None:
    """A sender's RTP timestamps leap an hour ahead: media time (what signals are stamped
    with, and episodes measured by) stays within MAX_PTS_LEAD_S of the receiver's clock,
    and keeps going forward."""
    from monitor.media import MAX_PTS_LEAD_S

    analyzer = DarkVideo()
    rx = receiver(Recorder(), Consent(frozenset({"video"})), video=analyzer)
    cleanup.append(rx)
    started = time.monotonic()
    cleanup.append(await connect_client([LeapingVideo(black, fps=10)], rx.handle_offer))
    await eventually(lambda: len(analyzer.times) >= 25)
    elapsed = time.monotonic() - started
    assert max(analyzer.times) <= elapsed + MAX_PTS_LEAD_S
    assert analyzer.times == sorted(analyzer.times)


class GappyAudio(GeneratedAudio):
    """Every third 20 ms frame of a tone, the others lost (their time passes, unsent)."""

    async def recv(self) -> Any:
        frame = await super().recv()
        for _ in range(2):  # the next two frames are "lost" on the way
            await super().recv()
        return frame


async def test_audio_that_arrives_with_gaps_is_a_limit_until_it_is_whole(
        cleanup: list[Any]) -> None:
    """A connection losing two packets in three: the decoded frames cover a third of the
    time, and sounds in the gaps are never heard. The clinician's status says so (limit
    ``lossy``, not blind); whole audio clears it."""
    tone = (np.sin(np.arange(960) / 6.0) * 3000).astype(np.int16)
    rec = Recorder()
    limits: list[tuple[str, str | None]] = []
    media = MediaParams(audio_factory=SilentAudio, video_factory=DarkVideo, lossy_window_s=1.0)
    rx = MediaReceiver("s-1", "p-1", Consent(frozenset({"audio"})), media, LOOPBACK,
                       rec.on_signal, rec.on_status,
                       on_limit=lambda kind, limit: limits.append((kind, limit)))
    cleanup.append(rx)
    cleanup.append(await connect_client([GappyAudio(lambda _i: tone)], rx.handle_offer))
    await eventually(lambda: ("audio", "lossy") in limits)
    assert rx.media_state()["audio"] == "flowing"
    # a new connection with whole audio: no gaps, no limit
    whole = MediaReceiver("s-1", "p-2", Consent(frozenset({"audio"})), media, LOOPBACK,
                          on_limit=lambda kind, limit: limits.append(("whole", limit)))
    cleanup.append(whole)
    cleanup.append(await connect_client([GeneratedAudio(lambda _i: tone)], whole.handle_offer))
    await eventually(lambda: whole.stats()["audio"]["received"] >= 150)  # 3 windows
    assert not [limit for who, limit in limits if who == "whole"]


async def test_a_withdrawal_while_flowing_is_reported_does_not_crash_the_reader(
        cleanup: list[Any]) -> None:
    """The consent is narrowed while the track's first ``flowing`` report is awaited (the
    server writes it to the ledger meanwhile): the pipeline is gone when the report returns,
    and the frame that arrived meanwhile must not crash the track's reader (it ends with
    its receiving, reported stopped once, without an exception)."""
    rec = Recorder()
    receivers: list[MediaReceiver] = []

    async def on_status(kind: str, state: str) -> None:
        rec.on_status(kind, state)
        if (kind, state) == ("video", "flowing") and rec.statuses.count(("video", "flowing")) == 1:
            await receivers[0].set_consent(Consent(frozenset({"audio"})))

    media = MediaParams(video_factory=DarkVideo, audio_factory=SilentAudio)
    rx = MediaReceiver("s-1", "p-1", BOTH, media, LOOPBACK, rec.on_signal, on_status)
    receivers.append(rx)
    cleanup.append(rx)
    cleanup.append(await connect_client([GeneratedVideo(black)], rx.handle_offer))
    await rec.until(lambda: ("video", "stopped") in rec.statuses)
    task = rx._tracks["video"].task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 10)
    assert task.exception() is None
    assert rec.statuses.count(("video", "stopped")) == 1


async def test_a_kind_withdrawn_before_the_connection_is_up_is_not_received(
        cleanup: list[Any]) -> None:
    """Withdrawn between the answer and the connection: aiortc's receiver.stop() does nothing
    before the receiver started, and the receiver starts with the connection. Its first frame
    now ends the receiving; before, the kind was decoded and drained for the whole call."""
    rec = Recorder()
    rx = receiver(rec, BOTH)
    cleanup.append(rx)

    async def answer_then_withdraw(offer: Any) -> Any:
        answer = await rx.handle_offer(offer)
        await rx.set_consent(Consent(frozenset({"audio"})))
        return answer

    cleanup.append(await connect_client([GeneratedVideo(black)], answer_then_withdraw))
    await eventually(lambda: rx._tracks.get("video") is not None
                     and rx._tracks["video"].task is not None)
    task = rx._tracks["video"].task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 10)
    assert rx.media_state()["video"] != "flowing"
