"""The per-track pipelines without a network: batching, bounds and ordering."""

from __future__ import annotations

import asyncio
import fractions
import threading

import av
import numpy as np
import pytest

from monitor.media_pipeline import (
    AudioPipeline,
    LagWatch,
    VideoPipeline,
    audio_to_mono,
    plain,
)
from signals.media.detection import Detection


def audio_frame(index: int, value: float = 0.1, layout: str = "mono") -> av.AudioFrame:
    channels = 2 if layout == "stereo" else 1
    data = np.full((1, 960 * channels), int(value * 32767), np.int16)
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout=layout)
    frame.sample_rate, frame.pts = 48_000, index * 960
    frame.time_base = fractions.Fraction(1, 48_000)
    return frame


def video_frame(value: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((32, 32, 3), value, np.uint8), format="bgr24")


class GatedAudio:
    """Blocks in push until the test opens the gate: a busy analysis thread on demand."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.pushes: list[tuple[float, int]] = []

    def push(self, samples: np.ndarray, sample_rate: int, t: float) -> list[Detection]:
        self.gate.wait(10)
        self.pushes.append((round(t, 3), len(samples)))
        return []

    def finish(self, t: float) -> list[Detection]:
        return [Detection("audio.shutter", t, None, 0.5, {"n": np.int64(len(self.pushes))})]


class GatedVideo:
    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[tuple[float, int]] = []

    def push(self, picture: np.ndarray, t: float) -> list[Detection]:
        self.gate.wait(10)
        self.seen.append((round(t, 3), int(picture[0, 0])))
        return []

    def finish(self, t: float) -> list[Detection]:
        return []


async def settle(pipeline: AudioPipeline | VideoPipeline) -> None:
    while pipeline._job is not None:
        await asyncio.wait({pipeline._job})
        await asyncio.sleep(0)


async def test_audio_is_batched_and_contiguous_runs_are_merged() -> None:
    sink, out = GatedAudio(), []
    pipe = AudioPipeline(emit=out.extend, sink=sink, batch_s=0.1)
    for i in range(10):
        pipe.offer(audio_frame(i), i * 0.02)
    await settle(pipe)
    assert sink.pushes == [(0.0, 4800), (0.1, 4800)]
    # A gap (lost packets) starts a new chunk at its own time instead of shifting samples.
    for i in (20, 21, 22, 30, 31):
        pipe.offer(audio_frame(i), i * 0.02)
    await pipe.close()
    assert sink.pushes[2:] == [(0.4, 2880), (0.6, 1920)]
    assert [d.signal for d in out] == ["audio.shutter"]
    assert pipe.stats.analysed == 15 and pipe.stats.dropped == 0


async def test_live_audio_is_handed_over_in_400_ms_batches_by_default() -> None:
    # each push costs the audio analyzer about 0.5 ms whatever its length: 100 ms batches
    # cost a call 5-6 ms of CPU a second, 200 ms ones about 3 and 400 ms ones about 1.5
    # (same detections, measured on the audio evaluation's 232 clips), and fewer hand-offs
    from monitor.media import MediaParams

    sink = GatedAudio()
    pipe = AudioPipeline(emit=lambda d: None, sink=sink,
                         batch_s=MediaParams().audio_batch_s)
    for i in range(40):
        pipe.offer(audio_frame(i), i * 0.02)
    await settle(pipe)
    assert sink.pushes == [(0.0, 19200), (0.4, 19200)]
    assert AudioPipeline(emit=lambda d: None).batch_s == MediaParams().audio_batch_s


async def test_audio_backlog_is_bounded_while_the_worker_is_busy() -> None:
    sink, out = GatedAudio(), []
    pipe = AudioPipeline(emit=out.extend, sink=sink, batch_s=0.02, backlog_s=0.2)
    sink.gate.clear()
    for i in range(60):  # 1.2 s arrive while the first push is stuck
        pipe.offer(audio_frame(i), i * 0.02)
    sink.gate.set()
    await pipe.close()
    assert pipe.stats.dropped == 60 - 1 - 10  # one in flight, 0.2 s kept
    assert sink.pushes[0] == (0.0, 960)
    assert sink.pushes[1] == (1.0, 9600)  # the newest 200 ms, in one push


async def test_video_keeps_only_the_newest_waiting_picture() -> None:
    sink = GatedVideo()
    pipe = VideoPipeline(emit=lambda d: None, sink=sink, max_fps=10)
    sink.gate.clear()
    pipe.offer(video_frame(1), 0.0)
    pipe.offer(video_frame(2), 0.02)  # over the 10 fps cap: skipped by design
    for k, t in enumerate((0.1, 0.2, 0.3), start=3):
        pipe.offer(video_frame(k * 10), t)
    sink.gate.set()
    await pipe.close()
    assert sink.seen == [(0.0, 1), (0.3, 50)]
    assert pipe.stats.skipped == 1 and pipe.stats.dropped == 2 and pipe.stats.analysed == 2


def test_lag_watch_decides_per_window_with_hysteresis() -> None:
    lag = LagWatch(window_s=5.0, on_s=0.4, off_s=0.1)
    assert not lag.add(2.0, 0.0)  # a window is judged when it is over, not by one job
    assert lag.add(0.0, 5.0)  # mean (2 + 0) / 2 = 1 s over 5 s
    assert lag.add(0.2, 6.0) and lag.add(0.2, 10.0)  # 0.2 s: between off and on, kept
    assert not lag.add(0.05, 15.0)  # a window of short waits clears it
    # a clock that steps back starts a new window instead of judging a negative span
    stepped = LagWatch(window_s=5.0, on_s=0.4, off_s=0.1)
    stepped.add(1.0, 100.0)
    assert not stepped.add(1.0, 50.0) and stepped.add(1.0, 55.0)


async def test_a_pipeline_whose_jobs_wait_for_a_busy_thread_says_overloaded() -> None:
    """The analysis thread is shared: while another call's job holds it, this pipeline's job
    waits. Waits measured on the pipeline's clock (a test clock here) decide ``overloaded``;
    jobs that no longer wait clear it."""
    now = [0.0]
    busy, sink = GatedVideo(), GatedVideo()
    other = VideoPipeline(emit=lambda d: None, sink=busy, max_fps=10)
    pipe = VideoPipeline(emit=lambda d: None, sink=sink, max_fps=10,
                         lag=LagWatch(window_s=0.0, on_s=0.4, off_s=0.1),
                         clock=lambda: now[0])
    busy.gate.clear()
    other.offer(video_frame(1), 0.0)  # holds the thread
    pipe.offer(video_frame(2), 0.0)  # queued behind it
    now[0] = 1.0  # one second passes before the thread is free
    busy.gate.set()
    await settle(other)
    await settle(pipe)
    assert pipe.lag.overloaded and sink.seen == [(0.0, 2)]
    pipe.offer(video_frame(3), 0.2)  # the thread is free: no wait
    await settle(pipe)
    assert not pipe.lag.overloaded
    await other.close()
    await pipe.close()


class Brittle(GatedVideo):
    """Raises on every picture while ``broken``."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def push(self, picture: np.ndarray, t: float) -> list[Detection]:
        if self.broken:
            raise ValueError("cannot analyse this picture")
        return super().push(picture, t)


async def test_a_pipeline_whose_analyzer_keeps_failing_says_so_once_and_recovers() -> None:
    sink, told = Brittle(), []
    pipe = VideoPipeline(emit=lambda d: None, sink=sink, max_fps=10, on_failing=told.append)
    for i in range(5):
        pipe.offer(video_frame(i), i * 0.1)
        await settle(pipe)
        assert told == ([] if i < 2 else [True])  # the third failure in a row
    assert pipe.failing and pipe.stats.errors == 5
    sink.broken = False
    pipe.offer(video_frame(9), 0.9)
    await settle(pipe)
    assert told == [True, False] and not pipe.failing
    await pipe.close()


async def test_discarded_pipeline_never_reaches_its_analyzer_again() -> None:
    sink = GatedAudio()
    pipe = AudioPipeline(emit=lambda d: None, sink=sink, batch_s=0.02)
    pipe.offer(audio_frame(0), 0.0)
    await settle(pipe)
    pipe.discard()
    pipe.offer(audio_frame(1), 0.02)
    await settle(pipe)
    assert sink.pushes == [(0.0, 960)]


@pytest.mark.parametrize("layout", ["mono", "stereo"])
def test_audio_becomes_float32_mono(layout: str) -> None:
    mono = audio_to_mono(audio_frame(0, 0.5, layout))
    assert mono.dtype == np.float32 and mono.shape == (960,)
    assert mono.max() == pytest.approx(0.5, abs=1e-3)


def test_evidence_is_made_plain() -> None:
    value = plain({"a": np.float32(1.5), "b": [np.int64(2)], "c": np.arange(2), 3: (None,)})
    assert value == {"a": 1.5, "b": [2], "c": [0, 1], "3": [None]}
    assert type(value["a"]) is float and type(value["b"][0]) is int


async def test_planar_stereo_batches_become_the_channel_mean() -> None:
    sink = GatedAudio()
    got: list[np.ndarray] = []
    sink.push = lambda samples, rate, t: got.append(samples) or []  # type: ignore[method-assign]
    pipe = AudioPipeline(emit=lambda d: None, sink=sink, batch_s=0.04)
    for i in range(2):
        left = np.full(960, 0.2 * (i + 1), np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([left, -left / 2]), format="fltp",
                                           layout="stereo")
        frame.sample_rate = 48_000
        pipe.offer(frame, i * 0.02)
    await pipe.close()
    assert len(got) == 1 and got[0].shape == (1920,) and got[0].dtype == np.float32
    assert got[0][0] == pytest.approx(0.05) and got[0][-1] == pytest.approx(0.1)


class ShapeVideo:
    """Records the shape of every picture; asks for colour when told to."""

    def __init__(self, wants_colour: bool) -> None:
        self.wants_colour = wants_colour
        self.shapes: list[tuple[int, ...]] = []

    def push(self, picture: np.ndarray, t: float) -> list[Detection]:
        self.shapes.append(picture.shape)
        return []

    def finish(self, t: float) -> list[Detection]:
        return []


@pytest.mark.parametrize("colour,shape", [(False, (32, 32)), (True, (32, 32, 3))])
async def test_pictures_are_luma_unless_the_analyzer_wants_colour(
        colour: bool, shape: tuple[int, ...]) -> None:
    sink = ShapeVideo(colour)
    pipe = VideoPipeline(emit=lambda d: None, sink=sink, max_fps=10)
    pipe.offer(video_frame(90), 0.0)
    await pipe.close()
    assert sink.shapes == [shape]


def test_pixel_rate_is_over_only_after_a_sustained_excess() -> None:
    from monitor.media import PixelRate

    qvga = 320 * 240
    rate = PixelRate(limit=qvga * 10, after_ms=2000)
    # 10 fps of 320x240 (the SDK's copy) for a minute: never over
    assert not any(rate.over(qvga, t) for t in range(0, 60_000, 100))
    # a burst of 30 frames released at once (after a stall) is over for an instant only
    assert not any(rate.over(qvga, 60_000) for _ in range(30))
    assert not any(rate.over(qvga, t) for t in range(60_100, 65_000, 100))
    # 640x480 at 30 fps: over once it has lasted 2 s, not before
    start = 70_000
    got = [(t, rate.over(4 * qvga, t)) for t in range(start, start + 3000, 33)]
    first = next(t for t, over in got if over)
    assert start + 2000 <= first <= start + 2100
    # back to the SDK's copy: no longer over once the last second is back under the limit
    assert not rate.over(qvga, start + 5000)
    # a clock that goes back never makes a stream look faster than it is
    rate = PixelRate(limit=qvga * 10, after_ms=2000)
    assert not any(rate.over(qvga, t) for t in range(10_000, 20_000, 100))
    assert not any(rate.over(qvga, t) for t in range(0, 10_000, 100))


OFFER = """v=0
o=- 1 1 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=fingerprint:sha-256 AB:CD
m=video 9 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=mid:0
a=sendonly
a=rtpmap:96 VP8/90000
a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host
a=end-of-candidates
"""


@pytest.mark.parametrize(("change", "problem"), [
    ((), None),
    (("a=fingerprint:sha-256 AB:CD\n", ""), "has no DTLS fingerprint"),
    (("a=sendonly", "a=recvonly"), "sends no audio or video"),
    (("a=sendonly", "a=inactive"), "sends no audio or video"),
    (("a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\n", ""),
     "declares its ICE candidates complete but gives none"),
])
def test_offers_that_can_never_carry_media_are_named(change: tuple[str, ...],
                                                     problem: str | None) -> None:
    from monitor.media import _sdp_problem

    sdp = OFFER.replace(*change) if change else OFFER
    found = _sdp_problem(sdp)
    assert (found is None) if problem is None else (found is not None and problem in found)
    # a session-level direction applies to a section without its own
    assert _sdp_problem(OFFER.replace("a=sendonly\n", "").replace(
        "t=0 0\n", "t=0 0\na=recvonly\n")) is not None
