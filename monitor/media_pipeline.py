"""Per-track analysis pipelines: frames in, :class:`Detection` lists out, never blocking the
event loop for long and never queueing without bound.

All analysis of the process runs in **one** worker thread (:func:`worker`), so N calls never
take more than one core for detectors, whatever N is. Each pipeline has at most one job in
the worker at a time:

* video keeps only frames at least ``1 / max_fps`` apart (and only those the analyzer
  ``wants``, if it says); while one is being analysed only the newest waiting picture is
  kept, older waiting ones are dropped (the newest picture matters, not the queue);
* audio collects 20 ms frames into batches of ``batch_s`` (400 ms; longer while the worker
  is busy) and hands each batch over in one push (contiguous runs concatenated), dropping
  the oldest beyond ``backlog_s``. Each frame's peak is taken as it is copied (one ``max``
  and one ``min``, on the event loop, whatever the worker's load) for the pipeline's
  :class:`~signals.media.audio_silence.SilenceWatch`: a track that sends only digital
  silence (a muted microphone) is told to ``on_silent``.

Frames live only in memory: converted to numpy, pushed to the analyzer, released.

When more calls arrive than the thread can analyse, every job waits longer for its turn: each
pipeline watches how long its own jobs wait (:class:`LagWatch`) and says ``overloaded`` when
that wait is long enough that detections come late or are missed, so the clinician can be
told instead of the sidecar going partly blind without a word.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import av
import numpy as np
import numpy.typing as npt

from monitor.mediafile import bgr_picture, gray_picture
from signals.media.audio_silence import SilenceWatch, peak_level
from signals.media.detection import Detection

__all__ = [
    "AudioPipeline",
    "AudioSink",
    "LagWatch",
    "PipelineStats",
    "VideoPipeline",
    "VideoSink",
    "audio_to_mono",
    "frame_time",
    "plain",
    "raw_to_mono",
    "worker",
]


class VideoSink(Protocol):
    """What ``signals.media``'s ``VideoAnalyzer`` offers (docs/internals.md)."""

    def push(self, picture: npt.NDArray[np.uint8], t: float) -> list[Detection]:
        """``picture``: the frame's gray luma (HxW ``uint8``, ``gray_picture``), or BGR
        (``bgr_picture``) when the sink has a true ``wants_colour``."""
        ...

    def finish(self, t: float) -> list[Detection]: ...


class AudioSink(Protocol):
    """What ``signals.media``'s ``AudioAnalyzer`` offers (docs/internals.md)."""

    def push(
        self, samples: npt.NDArray[np.float32], sample_rate: int, t: float
    ) -> list[Detection]: ...

    def finish(self, t: float) -> list[Detection]: ...


log = logging.getLogger("sessionguard.media")

_worker: concurrent.futures.ThreadPoolExecutor | None = None
_worker_lock = threading.Lock()


def worker() -> concurrent.futures.ThreadPoolExecutor:
    """The process's single media-analysis thread."""
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="sessionguard-media"
            )
        return _worker


@dataclass
class PipelineStats:
    """Frame counters. ``skipped``: left out by design (over ``max_fps`` or the analyzer's
    own rate); ``dropped``: left out because the worker was busy (overload)."""

    received: int = 0
    analysed: int = 0
    skipped: int = 0
    dropped: int = 0
    errors: int = 0


def frame_time(frame: av.VideoFrame | av.AudioFrame) -> float | None:
    """Seconds since the track's first frame, from the RTP-derived ``pts``."""
    time = frame.time  # pts * time_base, computed by PyAV; None without them
    return None if time is None else float(time)


def audio_to_mono(frame: av.AudioFrame) -> npt.NDArray[np.float32]:
    """A decoded audio frame as float32 mono in -1..1 (any PyAV sample format)."""
    return raw_to_mono(frame.to_ndarray(), len(frame.layout.channels), frame.format.is_planar)


def raw_to_mono(data: npt.NDArray[Any], channels: int, planar: bool) -> npt.NDArray[np.float32]:
    """PyAV's ``to_ndarray()`` layout (planar ``(channels, n)``, packed ``(1, n*channels)``,
    or several frames of one layout concatenated along axis 1) as float32 mono in -1..1."""
    arr = data.reshape(channels, -1) if planar else data.reshape(-1, channels).T
    if channels == 1:
        mono = arr[0].astype(np.float32)
    else:
        mono = arr.astype(np.float32).mean(axis=0, dtype=np.float32)
    if data.dtype.kind in "iu":
        mono *= np.float32(1.0 / float(2 ** (8 * data.dtype.itemsize - 1)))
    return np.ascontiguousarray(mono, dtype=np.float32)


@dataclass
class LagWatch:
    """Whether the analysis thread keeps up, from how long one pipeline's jobs wait for it.

    Each finished job reports its wait (queued to started, in seconds). Every ``window_s``
    the mean wait of the window's jobs decides: ``on_s`` (0.25 s) or more and the pipeline
    is ``overloaded``, under ``off_s`` (0.06 s) it is not, in between it stays as it was.
    Jobs of a keeping-up thread wait for at most another call's job (a face search: tens of
    milliseconds). A mean wait of 0.25 s means video is analysed at well under the video
    analyzer's 5 pictures a second, and audio 0.25 s late (dropped beyond ``backlog_s``).
    (In the calls benchmark at twice the capacity, 0.4 s caught only 18 of 32 tracks while
    video ran at 2.2 of 5 pictures a second; at the capacity itself no track reports.)"""

    window_s: float = 5.0
    on_s: float = 0.25
    off_s: float = 0.06
    overloaded: bool = False
    _start: float | None = None
    _sum: float = 0.0
    _jobs: int = 0

    def add(self, wait: float, now: float) -> bool:
        """One job waited ``wait`` seconds; ``now`` on the same monotonic clock. Returns
        :attr:`overloaded`."""
        if self._start is None or now < self._start:
            self._start, self._sum, self._jobs = now, 0.0, 0
        self._sum += max(0.0, wait)
        self._jobs += 1
        if now - self._start >= self.window_s:
            mean = self._sum / self._jobs
            if mean >= self.on_s:
                self.overloaded = True
            elif mean < self.off_s:
                self.overloaded = False
            self._start, self._sum, self._jobs = now, 0.0, 0
        return self.overloaded


#: consecutive failed analysis jobs after which a pipeline is ``failing``
FAIL_AFTER = 3

_Raw = tuple[float, int, tuple[int, bool], npt.NDArray[Any], int]  # t, rate, layout, data, n


Emit = Callable[[list[Detection]], None]


@dataclass
class _Base:
    emit: Emit
    stats: PipelineStats = field(default_factory=PipelineStats)
    last_t: float = 0.0
    lag: LagWatch = field(default_factory=LagWatch)
    clock: Callable[[], float] = time.monotonic
    #: told ``True`` once FAIL_AFTER jobs in a row raised (the analyzer keeps failing on this
    #: track: nothing of it is analysed), ``False`` at the next job that succeeds
    on_failing: Callable[[bool], None] | None = None
    failing: bool = False
    _failures: int = 0
    _job: asyncio.Future[tuple[float, list[Detection]]] | None = None
    _closed: bool = False

    def _submit(self, fn: Callable[[], list[Detection]]) -> None:
        loop = asyncio.get_running_loop()
        clock = self.clock
        queued = clock()

        def timed() -> tuple[float, list[Detection]]:
            return clock() - queued, fn()  # how long the job waited for the thread

        job = loop.run_in_executor(worker(), timed)
        self._job = job
        job.add_done_callback(self._done)

    def _done(self, job: asyncio.Future[tuple[float, list[Detection]]]) -> None:
        self._job = None
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:
            if not self.stats.errors:
                log.error("media analyzer failed (further failures counted only): %r", exc)
            self.stats.errors += 1
            self._failures += 1
            if self._failures >= FAIL_AFTER and not self.failing:
                self._set_failing(True)
        else:
            self._failures = 0
            if self.failing:
                self._set_failing(False)
            wait, detections = job.result()
            self.lag.add(wait, self.clock())
            self.emit(detections)
        if not self._closed:
            self._next()

    def _set_failing(self, failing: bool) -> None:
        self.failing = failing
        if self.on_failing is not None:
            self.on_failing(failing)

    def _next(self) -> None:
        """Start the next job if one is waiting (audio only)."""

    def discard(self) -> None:
        """Forget the analyzer and anything waiting, without emitting (consent withdrawn)."""
        self._closed = True

    async def _drain(self) -> None:
        while self._job is not None:
            await asyncio.wait({self._job})
            await asyncio.sleep(0)

    async def finish(self, sink_finish: Callable[[float], list[Detection]]) -> None:
        """Wait for the job in flight, then close the analyzer's open episodes."""
        await self._drain()
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            detections = await loop.run_in_executor(worker(), sink_finish, self.last_t)
        except Exception:
            self.stats.errors += 1
            return
        self.emit(detections)


@dataclass
class VideoPipeline(_Base):
    sink: VideoSink | None = None
    max_fps: float = 10.0
    _last_taken: float | None = None
    _waiting: tuple[av.VideoFrame, float] | None = None

    def offer(self, frame: av.VideoFrame, t: float) -> None:
        self.stats.received += 1
        if self._closed or self.sink is None:
            return
        min_gap = 0.9 / self.max_fps if self.max_fps > 0 else 0.0
        if self._last_taken is not None and t - self._last_taken < min_gap:
            self.stats.skipped += 1
            return
        if self._job is not None:  # keep only the newest picture while the worker is busy
            if self._waiting is not None:
                self.stats.dropped += 1
            self._waiting = (frame, t)
            return
        self._start(frame, t)

    def _next(self) -> None:
        if self._waiting is not None:
            frame, t = self._waiting
            self._waiting = None
            self._start(frame, t)

    def _start(self, frame: av.VideoFrame, t: float) -> None:
        sink = self.sink
        if sink is None:
            return
        wants = getattr(sink, "wants", None)
        if wants is not None and not wants(t):  # the analyzer's own rate: skip the conversion
            self.stats.skipped += 1
            return
        self._last_taken = t
        self.last_t = t

        def analyse() -> list[Detection]:
            colour = getattr(sink, "wants_colour", False)
            return sink.push(bgr_picture(frame) if colour else gray_picture(frame), t)

        self.stats.analysed += 1
        self._submit(analyse)

    async def close(self) -> None:
        if self.sink is not None:
            await self.finish(self.sink.finish)


@dataclass
class AudioPipeline(_Base):
    sink: AudioSink | None = None
    backlog_s: float = 1.2
    batch_s: float = 0.4
    #: whether the track sends only digital silence (``None``: not watched); each change of
    #: its verdict is told to ``on_silent``
    silence: SilenceWatch | None = None
    on_silent: Callable[[bool], None] | None = None
    _pending: list[_Raw] = field(default_factory=list)
    _held: float = 0.0

    def offer(self, frame: av.AudioFrame, t: float) -> None:
        self.stats.received += 1
        if self._closed or self.sink is None:
            return
        # Only the copy out of the frame (and its peak) happens here; conversion to mono runs
        # in the worker, once per batch.
        layout = (len(frame.layout.channels), bool(frame.format.is_planar))
        rate = frame.sample_rate
        data = frame.to_ndarray()
        self._watch_silence(data, t, frame.samples / max(1, rate))
        self._pending.append((t, rate, layout, data, frame.samples))
        self._held += frame.samples / rate
        while self._held > self.backlog_s and len(self._pending) > 1:
            dropped = self._pending.pop(0)
            self._held -= dropped[4] / dropped[1]
            self.stats.dropped += 1
        if self._job is None:
            self._next()

    def _watch_silence(self, data: npt.NDArray[Any], t: float, seconds: float) -> None:
        watch = self.silence
        if watch is None:
            return
        was = watch.silent
        if watch.push(peak_level(data), t, seconds) != was and self.on_silent is not None:
            self.on_silent(watch.silent)

    def _next(self, force: bool = False) -> None:
        if not self._pending or self.sink is None:
            return
        if not force and self._held < self.batch_s - 1e-6:
            return  # wait for a fuller batch: fewer thread hand-offs, same samples
        runs = _merge(self._pending)
        count = len(self._pending)
        self._pending, self._held = [], 0.0
        last = runs[-1]
        self.last_t = last[0] + last[4] / last[1]
        sink = self.sink

        def analyse() -> list[Detection]:
            out: list[Detection] = []
            for t, rate, (channels, planar), data, _n in runs:
                out.extend(sink.push(raw_to_mono(data, channels, planar), rate, t))
            return out

        self.stats.analysed += count
        self._submit(analyse)

    async def close(self) -> None:
        if self.sink is not None:
            await self._drain()
            self._next(force=True)
            await self.finish(self.sink.finish)


def _merge(pending: list[_Raw]) -> list[_Raw]:
    """Concatenate runs of contiguous frames (same rate and layout, no gap over 2 ms)."""
    out: list[tuple[float, int, tuple[int, bool], list[npt.NDArray[Any]], int]] = []
    for t, rate, layout, data, n in pending:
        if out:
            start, r, lay, parts, total = out[-1]
            if r == rate and lay == layout and abs(start + total / r - t) < 0.002:
                parts.append(data)
                out[-1] = (start, r, lay, parts, total + n)
                continue
        out.append((t, rate, layout, [data], n))
    return [(t, rate, layout, parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1), n)
            for t, rate, layout, parts, n in out]


def plain(value: Any) -> Any:
    """Evidence made JSON-ready: numpy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
