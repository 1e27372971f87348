"""Rules-engine throughput and memory: signals per second through validation
(``signals.catalog.make_signal``) plus ``Engine.feed`` with the default rules, with 1, 100
and 10,000 sessions holding state; and engine state per idle session.

Targets (issue 2): at least 50,000 signals/s on one core; at most 20 KB per idle session.
"""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from typing import Any

from bench.results import write_section
from rules import Engine, load_rules
from signals.catalog import make_signal
from signals.consent import FULL_MONITORING

__all__ = ["main"]

T0 = 1_700_000_000_000
TARGET_RATE = 50_000
TARGET_BYTES = 20_000
REPEATS = 3

_DEVICES = {"change": "initial", "devices": [
    {"kind": "audioinput", "label": "MacBook Pro Microphone", "id": "a"},
    {"kind": "videoinput", "label": "FaceTime HD Camera", "id": "b"},
    {"kind": "audioinput", "label": "Krisp Microphone", "id": "c"}]}
# (weight, name, data) — a realistic mix: mostly heartbeats and page events
_MIX: list[tuple[int, str, dict[str, Any]]] = [
    (400, "client.heartbeat", {}),
    (150, "client.focus", {"focused": False}),
    (150, "client.focus", {"focused": True}),
    (80, "client.visibility", {"state": "hidden"}),
    (80, "client.visibility", {"state": "visible"}),
    (40, "client.key", {"combo": "Ctrl+C"}),
    (5, "client.key", {"combo": "PrintScreen"}),
    (20, "client.devices", _DEVICES),
    (20, "client.fullscreen", {"active": True}),
    (5, "client.pip", {"active": False}),
    (2, "client.capture_stream", {"element": "canvas"}),
    (2, "os.screenshot", {"api": "userDidTakeScreenshotNotification"}),
    (8, "audio.shutter", {"confidence": 0.6}),
    (8, "audio.virtual_source", {"confidence": 0.5}),
    (10, "video.no_person", {"duration_s": 3.0}),
    (10, "video.frozen", {}),
    (10, "video.extra_person", {"confidence": 0.6}),
]


def _stream(n: int, sessions: int, seed: int = 1) -> list[tuple[str, int, dict[str, Any], str]]:
    rng = random.Random(seed)
    names = [(name, data) for w, name, data in _MIX for _ in range(w)]
    out = []
    for i in range(n):
        name, data = rng.choice(names)
        # each session sends about one signal a second, as a live session does
        out.append((name, T0 + (i * 1000) // sessions, dict(data), f"s{i % sessions}"))
    return out


def _throughput(sessions: int, n: int, warm_per_session: int = 6) -> tuple[float, float, int]:
    """Signals/s through validation + engine, and validation alone (CPU time of this process).

    Every session first lives through ``warm_per_session`` signals of the same continuous
    stream (so windows, holds, cooldowns and consent are state the engine holds), then ``n``
    more signals are measured."""
    engine = Engine(load_rules(), default_consent=FULL_MONITORING)
    warm = sessions * warm_per_session
    stream = _stream(warm + n, sessions)
    for name, at, data, s in stream[:warm]:
        engine.feed(make_signal(name, at, data, session=s), at)
    measured = stream[warm:]
    gc.collect()
    alerts = 0
    start = time.process_time()
    for name, at, data, s in measured:
        sig = make_signal(name, at, data, session=s)
        alerts += len(engine.feed(sig, at).alerts)
    full = time.process_time() - start
    start = time.process_time()
    for name, at, data, s in measured:
        make_signal(name, at, data, session=s)
    validation = time.process_time() - start
    return n / full, n / validation, alerts


def _idle_bytes(sessions: int = 10_000) -> float:
    engine = Engine(load_rules(), default_consent=FULL_MONITORING)
    warm = [make_signal("client.heartbeat", T0 + i, {}, session="warm") for i in range(10)]
    for s in warm:
        engine.feed(s, s.at)
    signals = []
    for n in range(sessions):
        sid = f"idle-{n}"
        signals += [make_signal("client.heartbeat", T0, {}, session=sid),
                    make_signal("client.focus", T0 + 1000, {"focused": False}, session=sid),
                    make_signal("client.focus", T0 + 2000, {"focused": True}, session=sid),
                    make_signal("client.heartbeat", T0 + 15_000, {}, session=sid)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for s in signals:
        engine.feed(s, s.at)
    for n in range(sessions):
        engine.set_consent(f"idle-{n}", FULL_MONITORING, T0)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(d.size_diff for d in after.compare_to(before, "filename"))
    return grown / sessions


def main() -> None:
    rows = []
    for sessions in (1, 100, 10_000):
        n = 60_000 if sessions < 10_000 else 100_000
        runs = [_throughput(sessions, n) for _ in range(REPEATS)]
        rate = max(r[0] for r in runs)   # best of REPEATS, as timeit does: noise only slows
        vrate = max(r[1] for r in runs)
        alerts = runs[0][2]
        ok = "yes" if rate >= TARGET_RATE else "no"
        rows.append(f"| {sessions:,} | {n:,} | {rate:,.0f} | {vrate:,.0f} | {alerts:,} | {ok} |")
        print(f"sessions={sessions}: {rate:,.0f} signals/s (validation alone {vrate:,.0f}/s), "
              f"{alerts} alerts", flush=True)
    per_session = _idle_bytes()
    load = os.getloadavg()[0]
    print(f"idle session state: {per_session:,.0f} bytes", flush=True)
    body = "\n".join([
        "Signals through `make_signal` (pydantic validation) + `Engine.feed` with the default "
        f"rules ({len(load_rules().rules)}), on one core (CPU time of the process, so other "
        "load on the machine does "
        "not count), a seeded mix of mostly heartbeats and page events with about 5 % media "
        "detections and occasional screenshot keys, round-robin over the sessions (each "
        "sending about one signal a second of event time; each session first lives through "
        "6 signals of the same stream, so it holds windows, holds, cooldowns and consent). "
        "Best of 3 runs. Target: ≥ 50,000 signals/s.",
        "",
        "| sessions | signals | signals/s (validation + engine) | validation alone/s "
        "| alerts | ≥ target |",
        "|---:|---:|---:|---:|---:|:-:|",
        *rows,
        "",
        f"Engine state per idle session (10,000 sessions, each with heartbeats, a focus change "
        f"and a consent record; tracemalloc): **{per_session:,.0f} bytes** "
        f"(target ≤ {TARGET_BYTES:,}: {'yes' if per_session <= TARGET_BYTES else 'no'}).",
        "",
        f"Load average when measured: {load:.1f} (other work on the machine slows even CPU-time "
        "figures through shared caches; rerun `python -m bench engine` on a quiet machine).",
    ])
    write_section("engine", "Rules engine (issue 2)", body)


if __name__ == "__main__":
    main()
