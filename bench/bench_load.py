"""Load on the sidecar from a separate process, against a bare ``websockets`` JSON echo floor.

N patient channels each send ``rate`` signals a second (every ``alert_every``-th one a
``client.key`` that a bench rule turns into an alert; the rest ``client.focus``, stored but
not alerting) and N clinician
channels (one per session) receive the alerts, for ``duration`` seconds. The server runs in
its own process (``python -m bench.bench_load serve-sidecar|serve-echo``); this process is the
load generator. Reported: signals/s, p50/p99 signal-to-alert latency (send → alert received by
the clinician), server CPU (per message too), server RSS per session, and alerts lost (acked
alerting signals whose alert never reached the clinician).

    python -m bench.bench_load [--patients 1000] [--duration 60] [--rate 2]
    make bench   # or: python -m bench load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LoadResult", "main", "run_load"]

SECRET = "bench-secret-0123456789-0123456789-0123456789"
RULES = """
rules:
  - id: bench.key
    title: Screenshot key
    signals: [client.key]
    severity: warning
    message: A screenshot key combination was pressed.
    cooldown: 0s
    max_per_session: 10000
"""
CONSENT = {"monitoring": ["device"], "recording": "prohibited"}


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _loop_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s main thread (the server's event loop); the rest of the process
    (the audit store's writer and checkpoint threads) is the difference."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- the servers (child processes) -----------------------------------------------------------

async def _serve_sidecar(port_file: Path, workdir: Path, synchronous: str) -> None:
    from monitor.config import load_config
    from monitor.server import Sidecar, serve_forever

    rules = workdir / "bench-rules.yaml"
    rules.write_text(RULES)
    # MEMORY (diagnostic): the store in RAM, so the row shows the pipeline without the disk
    memory = synchronous == "MEMORY"
    db = ":memory:" if memory else str(workdir / "bench.db")
    config = load_config(env={"SESSIONGUARD_SECRET": SECRET, "SESSIONGUARD_RULES": str(rules),
                              "SESSIONGUARD_DB": db,
                              "SESSIONGUARD_MEDIA_ENABLED": "false",
                              "SESSIONGUARD_DB_SYNCHRONOUS": "NORMAL" if memory else synchronous})
    limits = config.limits.model_copy(update={"rate_per_s": 1000.0, "burst": 1000})
    config = config.model_copy(update={"limits": limits})
    for variable, key in (("SG_BENCH_GROUP_COMMIT_MS", "group_commit_ms"),
                          ("SG_BENCH_COMMIT_INTERVAL_MS", "commit_interval_ms")):
        if os.environ.get(variable):  # A/B runs of the store's group-commit settings
            store = config.store.model_copy(update={key: float(os.environ[variable])})
            config = config.model_copy(update={"store": store})
    sidecar = Sidecar(config)
    def ready(port: int) -> None:
        port_file.write_text(str(port))

    await serve_forever(sidecar, "127.0.0.1", 0, ready)


async def _serve_echo(port_file: Path, ledger_dir: Path | None = None) -> None:
    """The floor: parse each JSON message, ack it, forward alerting ones to the session's
    clinician. No auth, no rules, no store.

    With ``ledger_dir`` (the diagnostic ``echo-ledger`` row): the same, plus only the
    sidecar's durable ledger: each signal is appended to the audit store (SQLite, WAL,
    ``synchronous=FULL``, the default group commit) before its ack, and each alert is stored
    (it gets its seq) before it is forwarded. What the durable, hash-chained record of every
    signal costs on its own, with no auth, validation, rules or metrics."""
    import signal as _signal
    from urllib.parse import parse_qs, urlsplit

    from websockets.asyncio.server import ServerConnection, serve

    clinicians: dict[str, ServerConnection] = {}
    store = None
    if ledger_dir is not None:
        from monitor.config import StoreConfig
        from monitor.store import SqliteStore
        from monitor.store_async import AsyncStore

        defaults = StoreConfig()
        store = AsyncStore(SqliteStore(str(ledger_dir / "ledger.db"),
                                       synchronous=defaults.synchronous),
                           linger_s=defaults.group_commit_ms / 1000,
                           commit_interval_s=defaults.commit_interval_ms / 1000)

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        query = parse_qs(urlsplit(ws.request.path).query)
        session, role = query["session"][0], query["role"][0]
        if role == "clinician":
            clinicians[session] = ws
            await ws.send(json.dumps({"type": "status", "session": session}))
            await ws.wait_closed()
            return
        await ws.send(json.dumps({"type": "consent", **CONSENT}))
        async for frame in ws:
            msg = json.loads(frame)
            alerting = msg.get("signal") == "client.key"
            alert: dict[str, Any] = {}
            if alerting:  # built for alerting signals only, as the bare echo always did
                alert = {"type": "alert", "session": session, "at": int(msg["at"]),
                         "evidence": [{"signal": msg["signal"], "data": msg["data"]}]}
            if store is not None:
                write = store.append_soon(session, "signal", int(msg["at"]),
                                          {"name": msg["signal"], "data": msg["data"]})
                if alerting:
                    alert["seq"] = await store.append_alert(session, alert)
                await write
            await ws.send(json.dumps({"type": "ack", "seq": msg["seq"]}))
            if alerting and session in clinicians:
                await clinicians[session].send(json.dumps(alert))

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(_signal.SIGTERM, stop.set)
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        await stop.wait()
    if store is not None:
        await store.aclose()


# -- the load generator -----------------------------------------------------------------------

@dataclass
class LoadResult:
    name: str
    patients: int
    duration_s: float
    signals: int = 0
    acked: int = 0
    alerts_expected: int = 0
    alerts_received: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    loop_cpu_s: float = 0.0  # of cpu_s, the server's event-loop thread
    rss_idle_kib: int = 0
    rss_loaded_kib: int = 0
    connect_failures: int = 0
    generator_cpu_s: float = 0.0  # CPU of the load generator processes while measuring

    @property
    def signals_per_s(self) -> float:
        return self.acked / self.duration_s

    @property
    def lost(self) -> int:
        return self.alerts_expected - self.alerts_received

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]

    @property
    def cpu_us_per_message(self) -> float:
        return self.cpu_s / max(1, self.acked) * 1e6

    @property
    def rss_per_session_kib(self) -> float:
        return (self.rss_loaded_kib - self.rss_idle_kib) / max(1, self.patients)


def _url_for(kind: str, port: int, session: str, role: str) -> str:
    from monitor.tokens import mint

    base = f"ws://127.0.0.1:{port}/v1/ws"
    if kind.startswith("echo"):
        return f"{base}?session={session}&role={role}"
    token = mint(SECRET, session, "p" if role == "patient" else "c", role, 3600,
                 CONSENT if role == "patient" else None)
    return f"{base}?token={token}"


def _worker(args: tuple[str, int, list[str], float, float, float, int, int]) -> LoadResult:
    raise_nofile()
    kind, port, sessions, warmup, duration, rate, alert_every, seed = args
    return asyncio.run(_generate(kind, port, sessions, warmup, duration, rate, alert_every,
                                 seed))


async def _generate(kind: str, port: int, sessions: list[str], warmup: float, duration: float,
                    rate: float, alert_every: int, seed: int) -> LoadResult:
    import websockets

    def url_for(session: str, role: str) -> str:
        return _url_for(kind, port, session, role)

    patients = len(sessions)
    result = LoadResult(kind, patients, duration)
    rng = random.Random(seed)
    sent_alerting: dict[tuple[str, int], float] = {}
    acked_alerting: set[tuple[str, int]] = set()
    received: set[tuple[str, int]] = set()
    connect_limit = asyncio.Semaphore(50)
    measuring = asyncio.Event()
    window = [math.inf, math.inf]  # perf_counter bounds of the measurement
    stop = asyncio.Event()

    async def open_ws(url: str) -> Any:
        async with connect_limit:
            for _ in range(5):
                try:
                    return await websockets.connect(url, max_queue=None, open_timeout=30,
                                                    ping_interval=None, compression=None)
                except (OSError, TimeoutError, websockets.InvalidHandshake):
                    result.connect_failures += 1
                    await asyncio.sleep(0.2)
            raise RuntimeError("cannot connect")

    async def clinician_reader(ws: Any, session: str) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in ws:
                msg = json.loads(frame)
                if msg.get("type") != "alert":
                    continue
                data = msg["evidence"][0]["data"]
                key = (session, int(data["n"]))
                if key in received:
                    continue
                received.add(key)
                started = sent_alerting.get(key)
                # the alerts of signals sent within the window, whenever they arrive (the
                # readers run on after it): an alert sent before it and read late because
                # the generator was collecting its garbage as the window opened is not the
                # server's latency, and a slow one sent just before the end still counts
                if started is not None and window[0] <= started <= window[1]:
                    result.latencies_ms.append((time.perf_counter() - started) * 1000)

    async def patient(ws: Any, session: str) -> None:
        async def reader() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in ws:
                    msg = json.loads(frame)
                    if msg.get("type") == "ack":
                        if measuring.is_set():
                            result.acked += 1
                        if (session, msg["seq"]) in sent_alerting:
                            acked_alerting.add((session, msg["seq"]))

        task = asyncio.create_task(reader())
        seq = 0
        # each patient's alerting signals at its own phase: with one phase for all, every
        # session's alert fell in the same quarter of each 2 s cycle (bursts, not a rate)
        phase = rng.randrange(alert_every)
        period = 1.0 / rate
        await asyncio.sleep(rng.random() * period)
        next_at = time.perf_counter()
        while not stop.is_set():
            seq += 1
            alerting = (seq + phase) % alert_every == 0
            if alerting:
                body = {"type": "signal", "seq": seq, "signal": "client.key", "at": 0,
                        "data": {"combo": "PrintScreen", "n": seq}}
                sent_alerting[(session, seq)] = time.perf_counter()
            else:
                body = {"type": "signal", "seq": seq, "signal": "client.focus", "at": 0,
                        "data": {"focused": seq % 3 != 0}}
            body["at"] = time.time_ns() // 1_000_000
            try:
                await ws.send(json.dumps(body))
            except websockets.ConnectionClosed:
                break
            if measuring.is_set():
                result.signals += 1
            next_at += period
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.sleep(2.0)  # let the last acks and alerts arrive
        await ws.close()
        await task

    started = time.perf_counter()
    clinicians = await asyncio.gather(*(open_ws(url_for(s, "clinician")) for s in sessions))
    readers = [asyncio.create_task(clinician_reader(ws, s)) for ws, s in zip(clinicians, sessions,
                                                                               strict=True)]
    patient_ws = await asyncio.gather(*(open_ws(url_for(s, "patient")) for s in sessions))
    senders = [asyncio.create_task(patient(ws, s)) for ws, s in zip(patient_ws, sessions,
                                                                     strict=True)]
    await asyncio.sleep(max(0.0, started + warmup - time.perf_counter()))
    # The generator's own garbage collections (2,000 connections in two processes) paused it
    # for tens of ms every couple of seconds, then it sent the signals held back in a burst
    # and read alerts late: that measured the generator, not the server. It collects nothing
    # while measuring (reference counting still frees nearly everything).
    gc.collect()
    gc.freeze()
    gc.disable()
    # That collection paused the generator (tens of ms): it then sent what it held back in a
    # burst. Let the burst pass before the window opens.
    await asyncio.sleep(_SETTLE_S)
    t0, cpu0 = time.perf_counter(), time.process_time()
    window[0] = t0
    measuring.set()
    await asyncio.sleep(duration)
    window[1] = time.perf_counter()
    result.duration_s = window[1] - t0
    result.generator_cpu_s = time.process_time() - cpu0
    measuring.clear()
    stop.set()
    await asyncio.gather(*senders)
    for ws in clinicians:
        await ws.close()
    await asyncio.gather(*readers)
    # Only now: the first collection after the window walks everything allocated during it
    # and paused the generator, so the alerts of the window's last signals were read late.
    gc.enable()
    result.alerts_expected = len(acked_alerting)
    result.alerts_received = len(received & acked_alerting)
    return result


#: seconds between the generators' last garbage collection and the start of the window
_SETTLE_S = 1.0


def _pin_to(cpus: set[int]) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, cpus)


def run_load(kind: str, patients: int, duration: float, rate: float, alert_every: int = 4,
             seed: int = 1, workers: int = 2, pin: bool = False) -> LoadResult:
    """Start the ``kind`` server (``echo``, ``sidecar-FULL``, ``sidecar-NORMAL``: the store's
    synchronous mode) in a child process and load it. ``pin``: the server on the first CPU,
    the load generators on the others (so they do not take turns on the server's core)."""
    raise_nofile()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = pin and len(cpus) >= 2
    server_cpus, load_cpus = ({cpus[0]}, set(cpus[1:])) if pin else (set(cpus), set(cpus))
    with tempfile.TemporaryDirectory(prefix="sg-bench-") as tmp:
        port_file = Path(tmp) / "port"
        proc = subprocess.Popen([sys.executable, "-m", "bench.bench_load", "serve",
                                 kind, str(port_file), tmp],
                                cwd=Path(__file__).resolve().parent.parent,
                                stderr=subprocess.DEVNULL,
                                preexec_fn=(lambda: _pin_to(server_cpus)) if pin else None)
        try:
            deadline = time.monotonic() + 60
            while not port_file.exists() or not port_file.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {kind} server did not start")
                time.sleep(0.05)
            port = int(port_file.read_text())
            time.sleep(0.5)
            sessions = [f"bench-{i}" for i in range(patients)]
            chunks = [sessions[i::workers] for i in range(workers)]
            # connecting 2N channels takes a while: measure only once all are sending
            warmup = 8.0 + patients / 100
            idle_rss = _proc_rss_kib(proc.pid)
            ctx = multiprocessing.get_context("spawn")
            initializer = _pin_to if pin else None
            with ctx.Pool(workers, initializer, (load_cpus,) if pin else ()) as pool:
                pending = pool.map_async(_worker, [
                    (kind, port, chunk, warmup, duration, rate, alert_every, seed + i)
                    for i, chunk in enumerate(chunks)])
                time.sleep(warmup + _SETTLE_S + 0.5)  # inside the generators' window
                cpu0, t0 = _proc_cpu_s(proc.pid), time.perf_counter()
                loop0 = _loop_cpu_s(proc.pid)
                time.sleep(duration - 1.0)
                cpu_s, wall = _proc_cpu_s(proc.pid) - cpu0, time.perf_counter() - t0
                loop_s = _loop_cpu_s(proc.pid) - loop0
                loaded_rss = _proc_rss_kib(proc.pid)
                parts = pending.get(timeout=warmup + duration + 120)
            total = LoadResult(kind, patients, sum(p.duration_s for p in parts) / len(parts))
            for part in parts:
                total.signals += part.signals
                total.acked += part.acked
                total.alerts_expected += part.alerts_expected
                total.alerts_received += part.alerts_received
                total.latencies_ms.extend(part.latencies_ms)
                total.connect_failures += part.connect_failures
                total.generator_cpu_s += part.generator_cpu_s
            total.cpu_s = cpu_s * total.duration_s / wall
            total.loop_cpu_s = loop_s * total.duration_s / wall
            total.rss_idle_kib, total.rss_loaded_kib = idle_rss, loaded_rss
            return total
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_COLUMNS = ("server", "channels", "signals/s", "p50 ms", "p99 ms", "CPU", "CPU µs/signal",
            "RSS KiB/session", "alerts / lost", "load generators' CPU")
_HEADER = ("| " + " | ".join(_COLUMNS) + " |\n" + "|---" * len(_COLUMNS) + "|")


def _row(r: LoadResult) -> str:
    return (f"| {r.name} | {r.patients} + {r.patients} | {r.signals_per_s:,.0f} | "
            f"{r.pct(50):.1f} | {r.pct(99):.1f} | {100 * r.cpu_s / r.duration_s:.0f} % | "
            f"{r.cpu_us_per_message:.0f} | {r.rss_per_session_kib:.0f} | "
            f"{r.alerts_expected} / {r.lost} | {100 * r.generator_cpu_s / r.duration_s:.0f} % |")


def _split_row(r: LoadResult) -> str:
    per = 1e6 / max(1, r.acked)  # as cpu_us_per_message
    return f"{r.name} {r.loop_cpu_s * per:.0f} + {(r.cpu_s - r.loop_cpu_s) * per:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_load")
    parser.add_argument("--patients", type=int,
                        default=int(os.environ.get("SG_BENCH_PATIENTS", "1000")))
    parser.add_argument("--duration", type=float,
                        default=float(os.environ.get("SG_BENCH_DURATION", "60")))
    parser.add_argument("--rate", type=float, default=2.0, help="signals/s per patient")
    parser.add_argument("--alert-every", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="load generator processes")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="server on the first CPU, load generators on the others "
                             "(default; --no-pin lets the scheduler place them)")
    parser.add_argument("--only", choices=("echo", "sidecar-FULL", "sidecar-NORMAL",
                                           "sidecar-MEMORY", "echo-ledger"), action="append",
                        help="run only these servers and print their rows (implies --no-write)")
    parser.add_argument("--section", default="load",
                        help="bench/RESULTS.md section to write (several scales side by side)")
    args = parser.parse_args([] if argv is None else argv)
    if args.only:
        for kind in args.only:
            r = run_load(kind, args.patients, args.duration, args.rate, args.alert_every,
                         workers=args.workers, pin=args.pin)
            print(_row(r), f"(event loop + other threads: {_split_row(r)} µs a signal)",
                  flush=True)
        return
    results = []
    loads = [os.getloadavg()[0]]
    for kind in ("echo", "echo-ledger", "sidecar-FULL", "sidecar-NORMAL"):
        r = run_load(kind, args.patients, args.duration, args.rate, args.alert_every,
                     workers=args.workers, pin=args.pin)
        print(_row(r), flush=True)
        results.append(r)
        loads.append(os.getloadavg()[0])
    echo, ledger, full, side = results
    ratio = side.cpu_us_per_message / max(1e-9, echo.cpu_us_per_message)
    ratio_full = full.cpu_us_per_message / max(1e-9, echo.cpu_us_per_message)
    ratio_ledger = ledger.cpu_us_per_message / max(1e-9, echo.cpu_us_per_message)
    full_over_ledger = full.cpu_us_per_message / max(1e-9, ledger.cpu_us_per_message)
    placement = ("the server pinned to one CPU, the generators to the others" if args.pin
                 else "processes placed by the scheduler")
    body = f"""
{args.patients} patient channels sending {args.rate:g} signals/s each (every {args.alert_every}th
a `client.key` that a bench rule turns into an alert, the rest `client.focus`: every signal
is stored) and {args.patients}
clinician channels, one session each, for {args.duration:g} s after a warm-up; load generated
by {args.workers} separate processes on the same {os.cpu_count()}-core machine
({placement}). The generators collect no garbage while measuring, so their own
pauses do not count as the server's (the window opens {_SETTLE_S:g} s after their last
collection); each patient's alerting signals come at a random phase. Latency: signal
sent → alert received by the clinician, for every alerting signal sent within the window.
CPU and RSS are the server
process's (RSS per session = growth from idle to loaded, divided by the sessions). The
sidecar stores every signal and alert in SQLite (WAL, group commit) before acknowledging or
delivering (alerts do not linger, signals may wait up to 10 ms for company, and commits
start at most every 10 ms: `store.commit_interval_ms`);
`sidecar-FULL` fsyncs every commit (the default, survives power loss), `sidecar-NORMAL`
(`store.synchronous: NORMAL`) survives a killed process but not a power cut.
`echo-ledger` (a diagnostic floor) is the echo server plus only that durable ledger: each
signal appended to the sidecar's own audit store (hash-chained, SQLite WAL, FULL, the default
group commit) before its ack, each alert stored before it is forwarded; no auth,
validation, rules or metrics.

{_HEADER}
{_row(echo)}
{_row(ledger)}
{_row(full)}
{_row(side)}

- sidecar / echo CPU per signal: **{ratio_full:.2f}×** (FULL), **{ratio:.2f}×** (NORMAL)
  (target ≤ 1.5×)
- the durable ledger alone (echo-ledger / echo): **{ratio_ledger:.2f}×**; the sidecar over
  the echo-ledger floor: **{full_over_ledger:.2f}×** (FULL)
- CPU by thread, event loop + the others (the audit store's writer and checkpoints), in
  µs a signal: {"; ".join(_split_row(r) for r in results)}
- p99 signal-to-alert: **{full.pct(99):.1f} ms** (FULL), **{side.pct(99):.1f} ms** (NORMAL)
  (target ≤ 25 ms)
- alerts lost: **{full.lost + side.lost}** (must be 0)
- RSS per session: **{full.rss_per_session_kib:.0f} KiB** (FULL),
  **{side.rss_per_session_kib:.0f} KiB** (NORMAL), echo floor
  {echo.rss_per_session_kib:.0f} KiB (target ≤ 100 KB)
- machine load average (1 min) before/after each run: {", ".join(f"{x:.1f}" for x in loads)}
  on {os.cpu_count()} cores shared with other work. When it is well above the core count the
  processes get only part of a core: latencies then mostly measure waiting for the CPU
  (the load generator included), and CPU per signal stays the comparable figure.
"""
    print(body)
    if not args.no_write:
        from bench.results import write_section

        title = "Load: patient and clinician channels against the echo floor"
        write_section(args.section, f"{title} ({args.patients} sessions)", body)


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        raise_nofile()
        from monitor.allocator import keep_freed_memory

        keep_freed_memory()  # as `sessionguard serve` does (the echo floor too)
        if sys.argv[2].startswith("sidecar"):
            asyncio.run(_serve_sidecar(Path(sys.argv[3]), Path(sys.argv[4]),
                                       sys.argv[2].split("-", 1)[1]))
        else:
            asyncio.run(_serve_echo(Path(sys.argv[3]), Path(sys.argv[4])
                                    if sys.argv[2] == "echo-ledger" else None))
    else:
        main(sys.argv[1:])
