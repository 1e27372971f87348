"""Live media over WebRTC: the sidecar's aiortc peer for one patient.

The patient's SDK sends a ``webrtc.offer`` on its channel; the server hands the SDP to
:meth:`MediaReceiver.handle_offer` and sends back the answer. From then on the receiver

* accepts only the tracks the consent covers (``audio``, ``video``); others are answered
  ``inactive``, so the browser does not even send them; an offer with more than one audio or
  video section is refused (each would be decoded, one analysed: the other's frames would
  pile up unread);
* analyses frames in memory (:mod:`monitor.media_pipeline`) at most ``max_fps`` pictures a
  second and every audio frame, in the process's single analysis thread;
* turns each :class:`~signals.media.Detection` into a ``Signal(source="media")`` through
  ``on_signal``;
* reports ``on_status(kind, "flowing" | "stopped")`` when the first frame of a kind
  arrives, when none arrived for ``stall_after_s``, when frames resume, when the track ends,
  when the consent for it is withdrawn and when the peer closes;
* reports ``on_limit(kind, "narrowband" | None)`` when the analyzer's ``limit`` changes (the
  audio analyzer's band check, ``signals.media.audio_band``: the audio cannot carry a
  shutter's clicks), and ``None`` when the track ends;
* reports ``on_limit("audio", "muted")`` while the audio has been nothing but digital silence
  for ``muted_after_s`` (``signals.media.audio_silence``: a microphone muted in the page
  keeps sending zeros, so it never stops; nothing near the patient can be heard), and clears
  it at the first sound;
* refuses video that arrives at more than ``max_video_pixel_rate`` decoded pixels a second
  for ``oversize_after_s`` (a patient's app that ignores the SDK's reduced copy would
  otherwise take decoding time from every call in the process): it stops receiving that
  track, reports it ``stopped`` and then ``on_limit("video", "oversized")``.

Nothing here writes media anywhere, and nothing personal is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from monitor.media_ice import IceConfig, use_host_addresses
from monitor.media_pipeline import (
    AudioPipeline,
    AudioSink,
    LagWatch,
    PipelineStats,
    VideoPipeline,
    VideoSink,
    frame_time,
    plain,
    worker,
)
from signals.catalog import make_signal
from signals.consent import Consent
from signals.errors import MediaError, SessionguardError
from signals.media.audio_silence import MUTED, MUTED_AFTER_S, SilenceWatch
from signals.media.detection import Detection
from signals.model import Signal

__all__ = [
    "MAX_SDP_BYTES",
    "IceConfig",
    "MediaKind",
    "MediaParams",
    "MediaReceiver",
    "MediaState",
    "OnLimit",
    "OnSignal",
    "OnStatus",
    "PixelRate",
    "detection_to_signal",
    "epoch_ms",
    "preload_analyzers",
]

log = logging.getLogger("sessionguard.media")

MediaKind = Literal["audio", "video"]
MediaState = Literal["flowing", "stopped"]
OnSignal = Callable[[Signal], Awaitable[None] | None]
OnStatus = Callable[[MediaKind, MediaState], Awaitable[None] | None]
OnLimit = Callable[[MediaKind, str | None], Awaitable[None] | None]
#: frame counts a track gained since last told: ``received``, ``analysed``, ``skipped`` (over
#: the frame-rate caps, by design), ``dropped`` (the analysis thread was busy), ``errors``
OnFrames = Callable[[MediaKind, dict[str, int]], None]
MAX_SDP_BYTES = 64 * 1024
#: how far a track's media time may run ahead of the receiver's clock since its first frame
#: (media normally lags it: jitter buffers delay playout) before the clock is trusted
MAX_PTS_LEAD_S = 2.0
_KINDS: tuple[MediaKind, ...] = ("audio", "video")


def epoch_ms() -> int:
    """The default clock: wall time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def preload_analyzers() -> None:
    """Import the detector modules now (they take seconds to import the first time); call it
    once at startup, off the event loop if it is running, so the first call does not wait."""
    importlib.import_module("signals.media.video")
    importlib.import_module("signals.media.audio")


def _media_sections(sdp: str) -> dict[str, int]:
    """How many audio and video sections of ``sdp`` are in use (an ``m=`` line whose port is
    not 0: port 0 is a rejected or stopped section)."""
    counts: dict[str, int] = {kind: 0 for kind in _KINDS}
    for line in sdp.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in ("m=audio", "m=video") and parts[1] != "0":
            counts[parts[0][2:]] += 1
    return counts


def _sdp_problem(sdp: str) -> str | None:
    """Why an offer can never carry media to the sidecar (a sentence), or ``None``: no DTLS
    fingerprint (aiortc would answer, then fail unseen), no audio or video section the
    patient sends, or ICE candidates declared complete with none given."""
    if not _fingerprints(sdp):
        return "the WebRTC offer has no DTLS fingerprint (a=fingerprint)"
    directions = ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive")
    default = "a=sendrecv"  # a session-level direction applies to sections without their own
    sections: list[tuple[str | None, str | None]] = []  # (kind in use, its direction)
    candidates, ended = 0, False
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            in_use = len(parts) >= 2 and parts[0] in _KINDS and parts[1] != "0"
            sections.append((parts[0] if in_use else None, None))
        elif line in directions:
            if sections:
                sections[-1] = (sections[-1][0], line)
            else:
                default = line
        elif line.startswith("a=candidate:"):
            candidates += 1
        elif line == "a=end-of-candidates":
            ended = True
    media = [(direction or default) for kind, direction in sections if kind is not None]
    if media and not any(d in ("a=sendrecv", "a=sendonly") for d in media):
        return ("the WebRTC offer sends no audio or video (every section is recvonly or "
                "inactive)")
    if ended and candidates == 0:
        return "the WebRTC offer declares its ICE candidates complete but gives none"
    return None


def _fingerprints(sdp: str) -> set[str]:
    """The DTLS certificate fingerprints an SDP names (``a=fingerprint:`` lines)."""
    return {line.split(":", 1)[1].strip().lower() for line in sdp.splitlines()
            if line.startswith("a=fingerprint:")}


def _analyzer(module: str, name: str, params: Any) -> Any:
    cls = getattr(importlib.import_module(module), name)
    return cls() if params is None else cls(params)


def _default_video(params: Any) -> VideoSink:
    analyzer: VideoSink = _analyzer("signals.media.video", "VideoAnalyzer", params)
    return analyzer


def _default_audio(params: Any) -> AudioSink:
    analyzer: AudioSink = _analyzer("signals.media.audio", "AudioAnalyzer", params)
    return analyzer


@dataclass(frozen=True, slots=True)
class MediaParams:
    """Tuning of live media analysis.

    ``video`` / ``audio`` are passed to ``VideoAnalyzer`` / ``AudioAnalyzer`` (``None``: their
    defaults). ``video_factory`` / ``audio_factory`` replace those analyzers altogether (one
    fresh analyzer per track; used by the benchmark's floor and by embedders).
    ``lossy_window_s``: audio whose decoded frames cover under half of such a window is
    reported with the limit ``lossy``.
    ``first_media_s``: a consented track that delivers no frame this long after the answer
    is reported ``stopped`` with the limit ``absent``.
    ``overload_wait_s``: a track whose analysis jobs wait this long for the analysis thread,
    on average over ``overload_window_s``, reports the limit ``overloaded`` (see
    :class:`~monitor.media_pipeline.LagWatch`; it clears under a quarter of it).
    ``muted_after_s``: audio that has been digital silence (no sample above one step of
    16-bit audio) this long reports the limit ``muted`` until a sound arrives (see
    :class:`~signals.media.audio_silence.SilenceWatch`; keep it at or under the audio
    analyzer's ``virtual_source.max_gap_s``, 15 s, which leaves longer runs to it).
    """

    max_fps: float = 10.0
    stall_after_s: float = 3.0
    max_video_pixel_rate: float = 640 * 480 * 30
    oversize_after_s: float = 2.0
    audio_backlog_s: float = 1.2
    audio_batch_s: float = 0.4
    first_media_s: float = 10.0
    lossy_window_s: float = 10.0
    overload_wait_s: float = 0.25
    overload_window_s: float = 5.0
    muted_after_s: float = MUTED_AFTER_S
    video: Any = None
    audio: Any = None
    video_factory: Callable[[], VideoSink] | None = None
    audio_factory: Callable[[], AudioSink] | None = None

    def __post_init__(self) -> None:
        if not self.max_fps > 0:
            raise MediaError("media max_fps must be positive")
        if not self.stall_after_s > 0:
            raise MediaError("media stall_after_s must be positive")
        if not self.max_video_pixel_rate > 0:
            raise MediaError("media max_video_pixel_rate must be positive")
        if not self.oversize_after_s >= 0:
            raise MediaError("media oversize_after_s must not be negative")
        if not self.audio_backlog_s > 0:
            raise MediaError("media audio_backlog_s must be positive")
        if not 0 <= self.audio_batch_s <= self.audio_backlog_s:
            raise MediaError("media audio_batch_s must be between 0 and audio_backlog_s")
        if not self.lossy_window_s > 0:
            raise MediaError("media lossy_window_s must be positive")
        if not self.first_media_s > 0:
            raise MediaError("media first_media_s must be positive")
        if not self.overload_wait_s > 0:
            raise MediaError("media overload_wait_s must be positive")
        if not self.overload_window_s >= 0:
            raise MediaError("media overload_window_s must not be negative")
        if not (self.muted_after_s > 0 and math.isfinite(self.muted_after_s)):
            raise MediaError("media muted_after_s must be a positive number of seconds")

    def make_video(self) -> VideoSink:
        return self.video_factory() if self.video_factory else _default_video(self.video)

    def make_audio(self) -> AudioSink:
        return self.audio_factory() if self.audio_factory else _default_audio(self.audio)


def detection_to_signal(
    detection: Detection, start_ms: int, session: str, participant: str
) -> Signal:
    """A detector's episode as a media :class:`Signal` (docs/internals.md)."""
    data: dict[str, Any] = {"confidence": float(detection.confidence)}
    if detection.end is not None:
        data["duration_s"] = max(0.0, float(detection.end) - float(detection.t))
    for key, value in plain(dict(detection.evidence)).items():
        data.setdefault(key, value)
    return make_signal(
        detection.signal,
        start_ms + round(float(detection.t) * 1000),
        data,
        session=session,
        participant=participant,
        source="media",
        confidence=float(detection.confidence),
    )


class PixelRate:
    """Decoded video pixels a second over the last second of arrivals, by a monotonic clock
    of the receiver's (the sender controls its own timestamps; a wall clock can step back).
    :meth:`over` is true once the rate has stayed above ``limit`` for ``after_ms`` (a burst
    the jitter buffer releases at once is not a stream)."""

    def __init__(self, limit: float, after_ms: int) -> None:
        self.limit = limit
        self.after_ms = after_ms
        self._window: deque[tuple[int, int]] = deque()
        self._sum = 0
        self._over_since: int | None = None

    def over(self, pixels: int, now_ms: int) -> bool:
        if self._window and now_ms < self._window[-1][0]:  # a clock that went back: start over
            self._window.clear()
            self._sum = 0
            self._over_since = None
        self._window.append((now_ms, pixels))
        self._sum += pixels
        while self._window[0][0] <= now_ms - 1000:
            self._sum -= self._window.popleft()[1]
        if self._sum <= self.limit:
            self._over_since = None
            return False
        if self._over_since is None:
            self._over_since = now_ms
        return now_ms - self._over_since >= self.after_ms


@dataclass
class _Track:
    kind: MediaKind
    state: Literal["none", "flowing", "stopped"] = "none"
    last_frame_ms: int = 0
    start_ms: int | None = None
    start_mono: float | None = None  # time.monotonic() at the first frame (MAX_PTS_LEAD_S)
    t_offset: float = 0.0
    last_t: float = 0.0
    pipeline: VideoPipeline | AudioPipeline | None = None
    task: asyncio.Task[None] | None = None
    received: int = 0
    analysis: PipelineStats = field(default_factory=PipelineStats)  # across its pipelines
    limit: str | None = None  # what the track cannot carry, as last reported
    reported: dict[str, int] = field(default_factory=dict)  # frame counts given to on_frames
    refused: bool = False  # the sidecar stopped receiving it (oversized video)
    failing: bool = False  # its analyzer keeps raising: reported stopped, limit "failed"
    sink_limit: str | None = None  # what its analyzer last said it cannot carry
    lossy: bool = False  # audio: decoded frames cover too little of the time (see _watch)
    muted: bool = False  # audio: nothing but digital silence for muted_after_s
    covered_s: float = 0.0  # seconds of audio decoded in the current coverage window
    window_ms: int | None = None  # when that window began


class MediaReceiver:
    """The aiortc peer of one patient of one session (one RTCPeerConnection)."""

    def __init__(
        self,
        session: str,
        participant: str,
        consent: Consent,
        params: MediaParams | None = None,
        ice: IceConfig | None = None,
        on_signal: OnSignal | None = None,
        on_status: OnStatus | None = None,
        clock: Callable[[], int] = epoch_ms,
        on_limit: OnLimit | None = None,
        on_frames: OnFrames | None = None,
    ) -> None:
        self.session = session
        self.participant = participant
        self._consent = consent
        self._params = params or MediaParams()
        self._ice = ice or IceConfig()
        self._on_signal = on_signal
        self._on_status = on_status
        self._on_limit = on_limit
        self._on_frames = on_frames
        self._clock = clock
        self._pc: RTCPeerConnection | None = None
        self._tracks: dict[MediaKind, _Track] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._closed = False
        self._pending_calls: set[asyncio.Future[Any]] = set()
        self._ready: dict[str, Any] = {}
        self._answered_ms = 0  # when the latest offer was answered (first_media_s)
        self._dtx = False  # the offer negotiated Opus DTX (no coverage check)

    # -- public API ------------------------------------------------------------------------

    @property
    def consent(self) -> Consent:
        return self._consent

    @property
    def closed(self) -> bool:
        """Closed (by :meth:`close`, or because its connection failed): it takes no offer."""
        return self._closed

    def same_peer(self, sdp: str) -> bool:
        """Whether offer ``sdp`` comes from the peer already connected (the same DTLS
        certificate fingerprint), i.e. renegotiates this connection. An offer from a new
        peer connection (the browser SDK makes one for every ``attachMedia``) cannot be
        applied here and needs a fresh receiver. ``True`` before any offer."""
        current = self._pc.remoteDescription if self._pc is not None else None
        if current is None:
            return True
        return _fingerprints(current.sdp) == _fingerprints(sdp)

    def media_state(self) -> dict[str, str]:
        """``{"audio": "flowing"|"stopped"|"none", "video": ...}`` for the status message."""
        return {k: (self._tracks[k].state if k in self._tracks else "none") for k in _KINDS}

    def stats(self) -> dict[str, dict[str, int]]:
        """Frame counters per kind: received, analysed, skipped (over the frame-rate caps, by
        design), dropped (the analysis thread was busy: overload), errors (analyzer raised)."""
        out: dict[str, dict[str, int]] = {}
        for kind, track in self._tracks.items():
            s = track.analysis
            out[kind] = {"received": track.received, "analysed": s.analysed,
                         "skipped": s.skipped, "dropped": s.dropped, "errors": s.errors}
        return out

    async def handle_offer(self, sdp: str) -> str:
        """Answer the patient's offer (non-trickle: ICE gathering is complete in the answer).

        Raises :class:`MediaError` with a clear sentence for an unusable offer.
        """
        if self._closed:
            raise MediaError("this media connection is closed")
        if not isinstance(sdp, str) or not sdp.strip():
            raise MediaError("the WebRTC offer has no SDP")
        if len(sdp.encode("utf-8", "replace")) > MAX_SDP_BYTES:
            raise MediaError("the WebRTC offer is too large")
        for kind, count in _media_sections(sdp).items():
            if count > 1:
                # each would be decoded, and only one analysed: the other's frames would
                # pile up unread. Refused before the connection is touched (a re-offer
                # leaves the call that already works alone).
                raise MediaError(f"the WebRTC offer has {count} {kind} streams; send at most "
                                 "one camera and one microphone")
        problem = _sdp_problem(sdp)
        if problem is not None:
            raise MediaError(problem)
        fresh = self._pc is None
        if self._pc is None:
            self._pc = RTCPeerConnection(configuration=self._ice.rtc_configuration())
            self._pc.on("track", self._on_track)
            self._pc.on("connectionstatechange", self._on_connection_state)
        pc = self._pc
        try:
            with use_host_addresses(self._ice.host_addresses):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                if not any(t.kind in _KINDS for t in pc.getTransceivers()):
                    raise MediaError("the WebRTC offer has no audio or video")
                for transceiver in pc.getTransceivers():
                    allowed = transceiver.kind in _KINDS and self._consent.allows(transceiver.kind)
                    transceiver.direction = "recvonly" if allowed else "inactive"
                    if allowed and transceiver.kind not in self._ready:
                        # In the analysis thread: the first one imports the detectors (seconds).
                        self._ready[transceiver.kind] = await asyncio.get_running_loop(
                        ).run_in_executor(worker(), self._build, transceiver.kind)
                answer = await pc.createAnswer()
                await pc.setLocalDescription(answer)
        except Exception as exc:
            if fresh:  # a failed re-offer leaves the call that already works alone
                await self._abandon(pc)
            if isinstance(exc, SessionguardError):
                raise
            log.info("rejected a WebRTC offer: %s", type(exc).__name__)
            if type(exc).__name__ == "OperationError":  # aiortc: no codec in common
                raise MediaError("the WebRTC offer has no codec the sidecar can receive "
                                 "(video: VP8 or H.264; audio: Opus, G.722, PCMU or PCMA)"
                                 ) from exc
            raise MediaError(f"the WebRTC offer could not be used ({type(exc).__name__})") from exc
        self._answered_ms = self._clock()
        self._dtx = "usedtx=1" in sdp.replace(" ", "")  # silence then sends (almost) nothing
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch())
        return str(pc.localDescription.sdp)

    async def _abandon(self, pc: RTCPeerConnection) -> None:
        """Forget a peer whose offer failed: nothing was answered, nothing will flow."""
        self._pc = None
        self._ready.clear()
        for state in self._tracks.values():
            if state.task is not None:
                state.task.cancel()
        self._tracks.clear()
        try:
            await pc.close()
        except Exception as exc:  # an offer aiortc choked on can leave it half set up
            log.info("closing a rejected peer failed: %s", type(exc).__name__)

    async def set_consent(self, consent: Consent) -> None:
        """Apply a new consent: a withdrawn scope stops being analysed at once (its analyzer
        state is discarded, its status becomes ``stopped``) and its receiving stops (nothing
        of it is decoded any more). A scope granted later needs a new offer (the SDK makes one
        whenever the consented kinds change)."""
        old, self._consent = self._consent, consent
        for kind in _KINDS:
            track = self._tracks.get(kind)
            if track is None:
                continue
            if old.allows(kind) and not consent.allows(kind):
                if track.pipeline is not None:
                    track.pipeline.discard()
                    track.pipeline = None
                track.start_ms = None
                await self._set_state(track, "stopped")
                self._set_limit(track, None)
                await self._stop_receiving(kind)

    async def _stop_receiving(self, kind: str) -> None:
        """Stop the RTP receivers of ``kind``: their decoding ends, and their tracks end."""
        for transceiver in self._pc.getTransceivers() if self._pc is not None else []:
            if transceiver.kind == kind:
                with contextlib.suppress(Exception):  # already stopped, or the peer closed
                    await transceiver.receiver.stop()

    async def close(self) -> None:
        """Close the peer: open episodes are reported, then every flowing kind is ``stopped``."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._pc is not None:
            await self._pc.close()
        tasks = [t.task for t in self._tracks.values() if t.task is not None]
        if tasks:
            _done, still = await asyncio.wait(tasks, timeout=2.0)
            for task in still:
                task.cancel()
        for track in self._tracks.values():
            await self._end_track(track)
        if self._pending_calls:
            await asyncio.wait(self._pending_calls, timeout=5.0)

    # -- tracks ----------------------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        kind = track.kind
        if kind not in _KINDS or not self._consent.allows(kind) or self._closed:
            return  # answered "inactive": nothing will arrive
        media_kind: MediaKind = "audio" if kind == "audio" else "video"
        previous = self._tracks.get(media_kind)
        if previous is not None and previous.task is not None:
            previous.task.cancel()
        if previous is not None and (previous.refused or previous.limit == "absent"):
            self._set_limit(previous, None)  # a new track (a new offer) starts afresh
        state = _Track(media_kind)
        self._tracks[media_kind] = state
        state.task = asyncio.create_task(self._consume(state, track))

    async def _consume(self, state: _Track, track: MediaStreamTrack) -> None:
        p = self._params
        guard = (PixelRate(p.max_video_pixel_rate, int(p.oversize_after_s * 1000))
                 if state.kind == "video" else None)
        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    break
                state.received += 1
                if state.kind == "audio":
                    state.covered_s += frame.samples / max(1, frame.sample_rate)  # type: ignore[union-attr]
                if guard is not None and guard.over(
                        int(getattr(frame, "width", 0)) * int(getattr(frame, "height", 0)),
                        time.monotonic_ns() // 1_000_000):
                    await self._refuse(state, track)
                    break
                if not self._consent.allows(state.kind):
                    # withdrawn before its receiver had started (set_consent's stop came
                    # too early to take): stop receiving it now, never analysed
                    await self._stop_receiving(state.kind)
                    break
                now = self._clock()
                t = frame_time(frame)  # type: ignore[arg-type]
                if t is None or t < state.last_t:  # no usable pts: fall back on the clock
                    t = state.last_t + max(0, now - (state.last_frame_ms or now)) / 1000.0
                elif state.start_mono is not None:
                    # media time may not run ahead of the time that passed by more than
                    # MAX_PTS_LEAD_S: a sender whose timestamps leap (or race) ahead cannot
                    # post-date signals or stretch an episode; time stays monotonic
                    lead = (t - state.t_offset) - (time.monotonic() - state.start_mono)
                    if lead > MAX_PTS_LEAD_S:
                        state.t_offset += lead - MAX_PTS_LEAD_S
                state.last_frame_ms = now
                state.last_t = t
                if state.start_ms is None:
                    state.start_ms = now
                    state.start_mono = time.monotonic()
                    state.t_offset = t
                    state.pipeline = self._make_pipeline(state)
                if state.pipeline is None:
                    continue  # no analyzer: never report a blind track as flowing
                if state.state != "flowing" and not state.failing:
                    if state.limit == "absent":  # late, but here
                        self._set_limit(state, None)
                    await self._set_state(state, "flowing")
                pipeline = state.pipeline  # the consent may have been narrowed meanwhile
                if pipeline is None or self._closed:
                    continue
                pipeline.offer(frame, t - state.t_offset)  # type: ignore[arg-type]
        finally:
            if not self._closed:
                await self._end_track(state)

    def _make_pipeline(self, state: _Track) -> VideoPipeline | AudioPipeline | None:
        pipeline: VideoPipeline | AudioPipeline | None = None

        def emit(detections: list[Detection]) -> None:
            start = state.start_ms
            if start is not None:
                for detection in detections:
                    self._emit_detection(detection, start)
            state.sink_limit = getattr(sink, "limit", None)  # analyzers may have one
            self._refresh_limit(state, pipeline)

        try:
            sink = self._ready.pop(state.kind, None) or self._build(state.kind)
        except MediaError as exc:
            log.error("%s", exc)
            return None
        p = self._params
        lag = LagWatch(window_s=p.overload_window_s, on_s=p.overload_wait_s,
                       off_s=p.overload_wait_s / 4)

        def on_failing(failing: bool) -> None:
            self._schedule(self._analysis_failing, state, failing)

        if state.kind == "video":
            pipeline = VideoPipeline(emit=emit, stats=state.analysis, sink=sink,
                                     max_fps=p.max_fps, lag=lag, on_failing=on_failing)
        else:
            state.muted = False  # a fresh watch: silent only after muted_after_s of it

            def on_silent(silent: bool) -> None:
                state.muted = silent
                self._refresh_limit(state, pipeline)

            pipeline = AudioPipeline(emit=emit, stats=state.analysis, sink=sink,
                                     backlog_s=p.audio_backlog_s, batch_s=p.audio_batch_s,
                                     lag=lag, on_failing=on_failing,
                                     silence=SilenceWatch(p.muted_after_s), on_silent=on_silent)
        return pipeline

    async def _analysis_failing(self, state: _Track, failing: bool) -> None:
        """The track's analyzer keeps raising (``failing``), or works again. A track nobody
        can analyse is not ``flowing``: it is reported stopped, with the limit ``failed``
        as the reason, until a job succeeds again."""
        state.failing = failing
        if failing:
            log.error("the %s analysis keeps failing on a track: reported stopped", state.kind)
            await self._set_state(state, "stopped")
            self._set_limit(state, "failed")
        else:
            self._set_limit(state, None)
            if state.pipeline is not None and not self._closed:
                await self._set_state(state, "flowing")

    def _build(self, kind: str) -> Any:
        """A fresh analyzer for ``kind``; :class:`MediaError` if it cannot be made (a broken
        install or configuration must be loud, never a silently blind "flowing" track)."""
        try:
            return self._params.make_video() if kind == "video" else self._params.make_audio()
        except Exception as exc:
            raise MediaError(f"the {kind} analyzer could not start ({exc})") from exc

    async def _refuse(self, state: _Track, track: MediaStreamTrack) -> None:
        """Stop receiving ``track`` (oversized video): its decoding ends; ``_end_track`` then
        reports it stopped, and refused."""
        state.refused = True
        log.warning("stopped receiving a video track over media max_video_pixel_rate "
                    "(%.0f pixels a second)", self._params.max_video_pixel_rate)
        for transceiver in self._pc.getTransceivers() if self._pc is not None else []:
            if transceiver.receiver.track is track:
                await transceiver.receiver.stop()

    async def _end_track(self, state: _Track) -> None:
        pipeline, state.pipeline = state.pipeline, None
        if pipeline is not None:
            await pipeline.close()
        self._report_frames(state)  # counted before anyone is told it stopped
        await self._set_state(state, "stopped")
        self._set_limit(state, "oversized" if state.refused else None)

    def _report_frames(self, state: _Track) -> None:
        """Give ``on_frames`` what ``state``'s counters gained since they were last given."""
        if self._on_frames is None:
            return
        s = state.analysis
        counts = {"received": state.received, "analysed": s.analysed, "skipped": s.skipped,
                  "dropped": s.dropped, "errors": s.errors}
        gained = {k: v - state.reported.get(k, 0) for k, v in counts.items()
                  if v > state.reported.get(k, 0)}
        if gained:
            state.reported = counts
            self._on_frames(state.kind, gained)

    def _refresh_limit(self, state: _Track,
                       pipeline: VideoPipeline | AudioPipeline | None) -> None:
        """Report the limit a flowing track has now. Muted audio (only digital silence: there
        is nothing to analyse) outweighs an overloaded analysis thread, which outweighs lossy
        audio, which outweighs what the analyzer says (narrowband audio): each covers more
        of what the track's detectors miss."""
        if state.state != "flowing":
            return
        overloaded = pipeline is not None and pipeline.lag.overloaded
        self._set_limit(state, MUTED if state.muted
                        else "overloaded" if overloaded
                        else "lossy" if state.lossy else state.sink_limit)

    def _check_coverage(self, state: _Track, now: int) -> None:
        """Audio whose decoded frames cover under half of a ``lossy_window_s`` window (a
        connection losing packets: the gaps are never heard) is ``lossy`` until a window
        is 80 % covered. Not for a sender that negotiated DTX (silence sends nothing)."""
        window_ms = int(self._params.lossy_window_s * 1000)
        if state.window_ms is None or now < state.window_ms:
            state.window_ms, state.covered_s = now, 0.0
            return
        if now - state.window_ms < window_ms:
            return
        coverage = state.covered_s * 1000 / (now - state.window_ms)
        state.window_ms, state.covered_s = now, 0.0
        lossy = coverage < 0.5 or (state.lossy and coverage < 0.8)
        if lossy != state.lossy:
            state.lossy = lossy
            self._refresh_limit(state, state.pipeline)

    def _set_limit(self, state: _Track, limit: str | None) -> None:
        if state.limit == limit:
            return
        state.limit = limit
        if self._on_limit is not None:
            self._schedule(self._on_limit, state.kind, limit)

    # -- status ----------------------------------------------------------------------------

    async def _set_state(self, state: _Track, new: MediaState) -> None:
        if state.state == new or (state.state == "none" and new == "stopped"):
            return
        state.state = new
        if self._on_status is not None:
            await self._call(self._on_status, state.kind, new)

    async def _watch(self) -> None:
        stall_ms = int(self._params.stall_after_s * 1000)
        first_ms = int(self._params.first_media_s * 1000)
        period = min(0.5, self._params.stall_after_s / 4, self._params.first_media_s / 4)
        while not self._closed:
            await asyncio.sleep(period)
            now = self._clock()
            for state in list(self._tracks.values()):
                self._report_frames(state)
                if state.state == "flowing" and now - state.last_frame_ms >= stall_ms:
                    await self._set_state(state, "stopped")
                elif state.state == "flowing" and state.kind == "audio" and not self._dtx:
                    self._check_coverage(state, now)
                elif state.state == "none" and state.received == 0 and \
                        now - self._answered_ms >= first_ms and \
                        self._consent.allows(state.kind):
                    # answered, consented, and nothing ever came (ICE that never connects,
                    # a track the app sends nothing on: Chromium sends black frames and
                    # silence for a muted one): blind, not "never attached" (a kind whose
                    # consent was withdrawn meanwhile is not expected any more)
                    state.state = "stopped"
                    if self._on_status is not None:
                        await self._call(self._on_status, state.kind, "stopped")
                    self._set_limit(state, "absent")

    def _on_connection_state(self) -> None:
        if self._pc is not None and self._pc.connectionState == "failed" and not self._closed:
            task = asyncio.create_task(self.close())
            self._pending_calls.add(task)
            task.add_done_callback(self._pending_calls.discard)

    # -- signals ---------------------------------------------------------------------------

    def _emit_detection(self, detection: Detection, start_ms: int) -> None:
        try:
            signal = detection_to_signal(detection, start_ms, self.session, self.participant)
        except SessionguardError as exc:
            log.warning("dropped a detection the catalogue refuses: %s", exc)
            return
        if self._on_signal is not None:
            self._schedule(self._on_signal, signal)

    def _schedule(self, fn: Callable[..., Any], *args: Any) -> None:
        """Call ``fn`` now; if it returns an awaitable, run it as a task (kept until done)."""
        result = self._invoke(fn, *args)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._pending_calls.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Future[Any]) -> None:
        self._pending_calls.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("media callback failed: %r", task.exception())

    @staticmethod
    def _invoke(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            log.error("media callback failed: %r", exc)
            return None

    async def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        result = self._invoke(fn, *args)
        if inspect.isawaitable(result):
            try:
                await result
            except Exception as exc:
                log.error("media callback failed: %r", exc)
