"""CPU and memory per monitored call: live WebRTC media, all detectors on.

Two processes: this one runs the *senders* (aiortc peers that encode a generated 320x240
picture as VP8 at the browser SDK's frame rate, 5 fps, and a generated voice-like signal as
Opus; the calls' pictures start spread over a second), a child process runs the
*receivers* and measures its own CPU time (every thread: aiortc's decoders, our analysis
worker) and resident memory. The child runs in one of two modes on the same streams:

* ``floor`` — a bare aiortc peer per call that receives, decodes and drops every frame;
* ``monitored`` — :class:`monitor.media.MediaReceiver` per call with the real detectors.

Figures: CPU per call for each mode, their ratio (target ≤ 2×), the same pair at the SDK's
former 10 fps, the calls one process holds at 75 % of a core (target ≥ 12: counted one call
at a time from the estimate the per-call cost gives, a count holding when its run stays
within 75 % of a core with no track ``overloaded`` and no audio dropped), memory per call,
and how many frames the analysis dropped. ``BENCH_CALLS_FPS`` overrides the frame rate.
``BENCH_CALLS_SECONDS`` (default 10) sets the measuring window, ``BENCH_CALLS_REPEATS``
(default 3) how many times each mode is measured: the modes take turns, and each row is the
median run (by CPU per call) with the spread of all runs beside it, because one 10 s run
moved by ±20 % from one to the next. On a machine with two or more CPUs the receiving
process is pinned to the first and the senders to the others, as in ``bench_load``.
"""

from __future__ import annotations

import asyncio
import fractions
import importlib
import multiprocessing as mp
import os
import re
import resource
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from bench.results import write_section
from monitor.allocator import keep_freed_memory
from monitor.media import IceConfig, MediaParams, MediaReceiver
from monitor.media_ice import use_host_addresses
from signals.consent import FULL_MONITORING

__all__ = ["main"]

WARMUP_S = 3.0
LOOPBACK = ("127.0.0.1",)
WIDTH, HEIGHT = 320, 240
AUDIO_FRAMES_PER_S = 50  # 20 ms Opus frames
#: "75 % of a core": the capacity check's limit
CAPACITY_SHARE = 0.75


def _sdk_fps() -> int:
    """The frame rate the browser SDK asks its video sender for (``MAX_FPS``)."""
    sdk = Path(__file__).resolve().parent.parent / "monitor" / "static" / "sessionguard.js"
    found = re.search(r"^const MAX_FPS = (\d+);", sdk.read_text(), re.MULTILINE)
    return int(found.group(1)) if found else 10


#: the rate the calls are sent at: the SDK's (``BENCH_CALLS_FPS`` overrides it)
FPS = int(os.environ.get("BENCH_CALLS_FPS", "0")) or _sdk_fps()


class _NullAudio:
    """Finds nothing: for the plumbing row, and while ``signals.media.audio`` is missing."""

    def push(self, samples: Any, sample_rate: int, t: float) -> list[Any]:
        return []

    def finish(self, t: float) -> list[Any]:
        return []


class _NullVideo:
    """Takes every picture (converted to numpy) and finds nothing: the receiver's plumbing."""

    def push(self, picture: Any, t: float) -> list[Any]:
        return []

    def finish(self, t: float) -> list[Any]:
        return []


PLUMBING = {"__plumbing__": True}


def _have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _monitored_params(video: dict[str, Any] | None = None) -> MediaParams:
    if video == PLUMBING:
        return MediaParams(video_factory=_NullVideo, audio_factory=_NullAudio)
    video_params = None
    if video:
        from signals.media.params import VideoParams

        video_params = VideoParams.model_validate(video)
    if _have("signals.media.audio"):
        return MediaParams(video=video_params)
    return MediaParams(video=video_params, audio_factory=_NullAudio)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- senders (this process) -------------------------------------------------------------------


def _pictures(count: int = 40) -> list[np.ndarray]:
    """A person's photograph (scikit-image's astronaut) drifting slowly, with sensor noise."""
    try:
        from skimage import data

        photo = data.astronaut()[:, :, ::-1]  # type: ignore[no-untyped-call]  # RGB → BGR
    except Exception:
        photo = np.full((512, 512, 3), 110, np.uint8)
    import cv2

    base = cv2.resize(photo, (WIDTH + 40, HEIGHT + 40), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        dx = int(20 + 12 * np.sin(i / count * 2 * np.pi))
        crop = base[20:20 + HEIGHT, dx:dx + WIDTH].astype(np.int16)
        crop += rng.normal(0, 3, crop.shape).astype(np.int16)
        out.append(np.clip(crop, 0, 255).astype(np.uint8))
    return out


def _voice(seconds: float = 4.0, rate: int = 48_000) -> np.ndarray:
    """Room noise plus a syllable-modulated harmonic tone: voice-like load for the detectors."""
    rng = np.random.default_rng(11)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = np.clip(np.sin(2 * np.pi * 3 * t), 0, None) * (np.sin(2 * np.pi * 0.25 * t) > -0.3)
    signal = 0.2 * tone * envelope + rng.normal(0, 0.003, t.shape)
    return np.asarray(np.clip(signal, -1, 1) * 32767, np.int16)


class _Video(MediaStreamTrack):
    kind = "video"

    def __init__(self, pictures: list[np.ndarray], fps: int, delay: float = 0.0) -> None:
        super().__init__()
        self._pictures, self._fps, self._i, self._start = pictures, fps, 0, 0.0
        self._delay = delay

    async def recv(self) -> av.VideoFrame:
        loop = asyncio.get_running_loop()
        if self._i == 0:
            await asyncio.sleep(self._delay)
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._i / self._fps - loop.time()))
        frame = av.VideoFrame.from_ndarray(self._pictures[self._i % len(self._pictures)],
                                           format="bgr24")
        frame.pts = self._i * (90_000 // self._fps)
        frame.time_base = fractions.Fraction(1, 90_000)
        self._i += 1
        return frame


class _Audio(MediaStreamTrack):
    kind = "audio"

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__()
        self._samples, self._i, self._start = samples, 0, 0.0

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._i == 0:
            self._start = loop.time()
        await asyncio.sleep(max(0.0, self._start + self._i * 0.02 - loop.time()))
        n = len(self._samples) // 960
        chunk = self._samples[(self._i % n) * 960:(self._i % n + 1) * 960].reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate, frame.pts = 48_000, self._i * 960
        frame.time_base = fractions.Fraction(1, 48_000)
        self._i += 1
        return frame


# -- receivers (child process) ----------------------------------------------------------------


async def _drain(track: MediaStreamTrack, counter: list[int]) -> None:
    while True:
        try:
            await track.recv()
        except Exception:
            return
        counter[0] += 1


async def _receive(conn: Connection, mode: str, calls: int, seconds: float,
                   video: dict[str, Any] | None) -> None:
    loop = asyncio.get_running_loop()
    rss_before = rss_first = _rss_kib()
    closers: list[Any] = []
    receivers: list[MediaReceiver] = []
    overloaded: set[tuple[int, str]] = set()  # (call, kind) that reported "overloaded"
    frames = [0]
    tasks: set[asyncio.Task[None]] = set()
    for i in range(calls):
        offer = await loop.run_in_executor(None, conn.recv)
        if mode == "floor":
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

            def on_track(track: MediaStreamTrack) -> None:
                task = asyncio.ensure_future(_drain(track, frames))
                tasks.add(task)

            pc.on("track", on_track)
            with use_host_addresses(LOOPBACK):
                await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            conn.send(pc.localDescription.sdp)
            closers.append(pc)
        else:
            def on_limit(kind: str, limit: str | None, call: int = i) -> None:
                if limit == "overloaded":
                    overloaded.add((call, kind))

            rx = MediaReceiver(f"bench-{i}", "patient", FULL_MONITORING, _monitored_params(video),
                               IceConfig(host_addresses=LOOPBACK), on_limit=on_limit)
            conn.send(await rx.handle_offer(offer))
            closers.append(rx)
            receivers.append(rx)
        if i == 0:
            rss_first = _rss_kib()
    await asyncio.sleep(WARMUP_S)
    cpu0, wall0 = time.process_time(), time.monotonic()
    before = _totals(receivers) if receivers else {"received": frames[0]}
    await asyncio.sleep(seconds)
    cpu1, wall1 = time.process_time(), time.monotonic()
    after = _totals(receivers) if receivers else {"received": frames[0]}
    result = {
        "mode": mode,
        "calls": calls,
        "cpu_share": (cpu1 - cpu0) / (wall1 - wall0),
        "rss_kib": _rss_kib() - rss_before,
        "rss_per_call_kib": (_rss_kib() - rss_first) / max(1, calls - 1),
        "rss_first_kib": rss_first - rss_before,
        **{k: after[k] - before.get(k, 0) for k in after},
        "seconds": wall1 - wall0,
        "overloaded": len(overloaded),
        "overloaded_video": sum(1 for _, kind in overloaded if kind == "video"),
    }
    for closer in closers:
        await closer.close()
    conn.send(result)


def _totals(receivers: list[MediaReceiver]) -> dict[str, int]:
    out: dict[str, int] = {}
    for rx in receivers:
        for kind, stats in rx.stats().items():
            for key, value in stats.items():
                out[f"{kind}_{key}"] = out.get(f"{kind}_{key}", 0) + value
    out["received"] = out.get("audio_received", 0) + out.get("video_received", 0)
    return out


def _cpus() -> tuple[set[int], set[int]] | None:
    """(receiver CPUs, sender CPUs) when there are at least two CPUs to split, else None."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    return ({cpus[0]}, set(cpus[1:])) if len(cpus) >= 2 else None


def _child(conn: Connection, mode: str, calls: int, seconds: float,
           video: dict[str, Any] | None, cpus: set[int] | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    keep_freed_memory()  # as `sessionguard serve` does (every mode, the floor too)
    asyncio.run(_receive(conn, mode, calls, seconds, video))


async def _run(mode: str, calls: int, seconds: float,
               video: dict[str, Any] | None = None, label: str = "",
               fps: int = FPS) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    ours, theirs = ctx.Pipe()
    split = _cpus()
    child = ctx.Process(target=_child, daemon=True,
                        args=(theirs, mode, calls, seconds, video,
                              None if split is None else split[0]))
    child.start()
    before = os.sched_getaffinity(0) if split is not None else None
    if split is not None:
        os.sched_setaffinity(0, split[1])
    loop = asyncio.get_running_loop()
    pictures, voice = _pictures(), _voice()
    senders: list[RTCPeerConnection] = []
    try:
        for k in range(calls):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            # the calls' pictures start spread over a second, as calls that began at
            # different times would (in lockstep, every call's face search fell due at once)
            pc.addTransceiver(_Video(pictures, fps, k / calls), direction="sendonly")
            pc.addTransceiver(_Audio(voice), direction="sendonly")
            with use_host_addresses(LOOPBACK):
                await pc.setLocalDescription(await pc.createOffer())
            ours.send(pc.localDescription.sdp)
            answer = await loop.run_in_executor(None, ours.recv)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            senders.append(pc)
        result: dict[str, Any] = await loop.run_in_executor(None, ours.recv)
        result["label"] = label or mode
        result["fps"] = fps
    finally:
        for pc in senders:
            await pc.close()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
        if before is not None:
            os.sched_setaffinity(0, before)
    return result


def _per_call(r: dict[str, Any]) -> float:
    """Share of a core per call-second of media actually received (``fps`` pictures + 50
    audio frames a second), so a sender that falls behind does not flatter a mode."""
    call_seconds = r["received"] / (r["fps"] + AUDIO_FRAMES_PER_S) / r["seconds"]
    return float(r["cpu_share"] / call_seconds) if call_seconds > 0 else float("inf")


def _line(r: dict[str, Any]) -> str:
    return (f"| {r['label']} | {r['calls']} | {r['cpu_share'] * 100:.1f} % | "
            f"{_per_call(r) * 100:.2f} % | {r['rss_per_call_kib'] / 1024:.1f} MiB "
            f"(first call {r['rss_first_kib'] / 1024:.0f} MiB) | {_drops(r)} | {_spread(r)} |")


def _spread(r: dict[str, Any]) -> str:
    if "spread" not in r:
        return "one run"
    low, high, n = r["spread"]
    return f"{low * 100:.2f}–{high * 100:.2f} % ({n} runs)"


def _received_share(r: dict[str, Any]) -> float:
    return float(r["received"] / (r["calls"] * r["seconds"] * (r["fps"] + AUDIO_FRAMES_PER_S)))


def _drops(r: dict[str, Any]) -> str:
    expected = r["calls"] * r["seconds"]
    got = f"received {_received_share(r):.0%} of the frames sent"
    if "video_analysed" not in r:
        return got
    return (f"{got}; video {r['video_analysed'] / expected:.1f} pictures/s per call analysed, "
            f"{r['video_dropped']} dropped busy; audio {r['audio_analysed']} of "
            f"{r['audio_received']} frames analysed, {r['audio_dropped']} dropped; "
            f"{r['overloaded']} of {2 * r['calls']} tracks reported `overloaded` "
            f"({r['overloaded_video']} video)")


LEAN = {"faces": {"profile_every": 0}}


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run by CPU per call (the lower middle one of an even count), with the
    spread of every run's CPU per call."""
    ranked = sorted(runs, key=_per_call)
    row = dict(ranked[(len(ranked) - 1) // 2])
    row["spread"] = (_per_call(ranked[0]), _per_call(ranked[-1]), len(ranked))
    return row


OLD_FPS = 10


def _holds(r: dict[str, Any]) -> bool:
    """Did a run of monitored calls stay within ``CAPACITY_SHARE`` of a core with every
    track keeping up (none ``overloaded``, no audio dropped unanalysed)?"""
    return bool(r["cpu_share"] <= CAPACITY_SHARE and r["overloaded"] == 0
                and r["audio_dropped"] == 0)


def _capacity(start: int, seconds: float) -> tuple[int, list[dict[str, Any]]]:
    """The most monitored calls one process holds (:func:`_holds`), counted up or down from
    ``start`` (the estimate from the per-call cost) one run at a time; and those runs."""
    checks: list[dict[str, Any]] = []

    def check(n: int) -> bool:
        r = asyncio.run(_run("monitored", n, seconds, None, "monitored, capacity check"))
        held = _holds(r)
        r["label"] += " (holds)" if held else " (does not hold)"
        print(_line(r), flush=True)
        checks.append(r)
        return held

    n = start
    if check(n):
        while n < start + 6 and check(n + 1):
            n += 1
        return n, checks
    while n > 1:
        n -= 1
        if check(n):
            return n, checks
    return 0, checks


def main() -> None:
    seconds = float(os.environ.get("BENCH_CALLS_SECONDS", "10"))
    calls = int(os.environ.get("BENCH_CALLS_N", "4"))
    repeats = max(1, int(os.environ.get("BENCH_CALLS_REPEATS", "3")))
    load_before = os.getloadavg()[0]
    modes: list[tuple[str, dict[str, Any] | None, str, int]] = [
        ("floor", None, "floor", FPS),
        ("monitored", None, "monitored (default detector params)", FPS),
        ("monitored", PLUMBING, "receiver with null analyzers (plumbing)", FPS),
        ("monitored", LEAN, "monitored, no profile-face cascade", FPS),
    ]
    if FPS != OLD_FPS:  # what the SDK's former frame rate cost, side by side
        modes += [("floor", None, f"floor, sent at {OLD_FPS} fps", OLD_FPS),
                  ("monitored", None, f"monitored, sent at {OLD_FPS} fps", OLD_FPS)]
    runs: dict[str, list[dict[str, Any]]] = {label: [] for _, _, label, _ in modes}
    for i in range(repeats):  # the modes take turns, so drift in the machine hits them all
        for mode, video, label, fps in modes:
            result = asyncio.run(_run(mode, calls, seconds, video, label, fps))
            runs[label].append(result)
            print(f"run {i + 1}/{repeats}: {_line(result)}", flush=True)
    rows = [_median(runs[label]) for _, _, label, _ in modes]
    floor, monitored, _, lean = rows[:4]
    floor_call, mon_call, lean_call = _per_call(floor), _per_call(monitored), _per_call(lean)
    ratios = sorted(_per_call(m) / _per_call(f)
                    for m, f in zip(runs[modes[1][2]], runs["floor"], strict=True))
    old = ""
    if len(rows) == 6:
        old_floor, old_mon = _per_call(rows[4]), _per_call(rows[5])
        old = (f"- Sent at {OLD_FPS} fps (the SDK's rate before 2026-11-30; the analyzer looks at "
               f"5 pictures a second either way, so half were decoded and dropped): floor "
               f"{old_floor * 100:.2f} %, monitored {old_mon * 100:.2f} % a call "
               f"(**{old_mon / old_floor:.2f}×**); at {FPS} fps {floor_call * 100:.2f} % and "
               f"{mon_call * 100:.2f} %.")
    estimate = int(CAPACITY_SHARE / mon_call) if mon_call > 0 else 0
    lean_capacity = int(CAPACITY_SHARE / lean_call) if lean_call > 0 else 0
    capacity, checks = _capacity(max(estimate, 1), seconds)
    rows += checks
    # twice as many calls as fit: the analysis thread falls behind, and every track should
    # say so (the capacity check's should not)
    overload = asyncio.run(_run("monitored", 2 * max(capacity, 1), seconds, None,
                                "monitored, overload check (twice the capacity)"))
    print(_line(overload), flush=True)
    rows.append(overload)
    body = "\n".join([
        f"Each call: {WIDTH}x{HEIGHT} {FPS} fps VP8 (the browser SDK's rate) + 48 kHz Opus "
        f"over loopback UDP, sent by a "
        f"separate process (a drifting photograph with sensor noise, a voice-like signal); the "
        f"receiving process (pinned to one CPU, the senders to the other) is measured for "
        f"{seconds:.0f} s after a {WARMUP_S:.0f} s warm-up; each mode {repeats} times, taking "
        "turns, and the row is the median run (the spread of all runs in the last column). "
        "Process CPU = CPU time of every thread / wall time. *CPU per call* divides it by the "
        f"call-seconds of media actually received ({FPS + AUDIO_FRAMES_PER_S} frames a "
        "call-second), so a sender that "
        "falls behind on a loaded machine does not flatter a mode.",
        "",
        "| mode | calls | process CPU | CPU per call | memory per extra call | frames | "
        "CPU per call, all runs |",
        "|---|---|---|---|---|---|---|",
        *[_line(r) for r in rows],
        "",
        f"- monitored / floor CPU per call (medians): **{mon_call / floor_call:.2f}×** with the "
        f"default detector parameters, **{lean_call / floor_call:.2f}×** without the "
        f"profile-face cascade (target ≤ 2×); run by run (each monitored run over the floor "
        f"run just before it): {', '.join(f'{r:.2f}×' for r in ratios)}",
        f"- monitored calls one process holds at 75 % of a core: **{capacity}** (target ≥ 12): "
        f"the most calls whose capacity check stayed at or under 75 % of a core with no track "
        f"`overloaded` and no audio dropped unanalysed, counted from the estimate "
        f"{estimate} (75 % over the median CPU per call; {lean_capacity} without the profile "
        f"cascade) one call at a time: "
        + "; ".join(f"{c['calls']} calls {c['cpu_share'] * 100:.1f} % of a core, "
                    f"{c['overloaded']} tracks overloaded, {c['audio_dropped']} audio frames "
                    f"dropped" for c in checks) + ".",
        *([old] if old else []),
        f"- The *plumbing* row is the receiver with analyzers that do nothing (every picture up "
        f"to {FPS}/s converted to numpy, audio batched, thread hand-offs): its excess over the "
        "floor is the receiver's own cost; the rest is the detectors, mostly the video "
        "analyzer's Haar cascades (`detectMultiScale`).",
        "- *dropped busy* counts pictures/audio the single analysis thread had no time for.",
        f"- Overload: a track reports the limit `overloaded` to the clinician when its analysis "
        f"jobs wait 0.25 s or more on average over 5 s. Overload check ({overload['calls']} calls, "
        f"{overload['cpu_share'] * 100:.0f} % of a core, {_received_share(overload):.0%} "
        f"of the frames sent received): {overload['overloaded']} of {2 * overload['calls']}.",
        f"- Load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on 2 cores during the run "
        "(shared with other work): figures vary by ±20 % or more run to run; frame counts "
        "over 100 % are window-boundary effects; a row with many *dropped busy* pictures "
        "understates the cost of analysing every picture.",
        *([] if _have("signals.media.audio") else
          ["- **audio detectors were not available in this run**: audio decoded, not analysed."]),
    ])
    write_section("calls", "Live calls: CPU and memory per monitored call", body)


if __name__ == "__main__":
    main()
    sys.exit(0)
