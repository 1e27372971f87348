"""How long the integrity report and the tuning view take on a long, busy session.

A 2-hour session in a real SQLite store: a heartbeat every 5 s, 300 other signals, 40 alerts
with acknowledgements and feedback, blind periods and consent changes; then
``build_report`` + ``render_html`` + ``render_json`` (what ``GET .../report`` and
``sessionguard report`` do), and ``tuning`` over 20 such sessions.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

from bench.results import write_section
from monitor.report import build_report, render_html, render_json, tuning
from monitor.store import SqliteStore

__all__ = ["main"]

T0 = 1_764_300_000_000
HOURS = 2


def _fill(store: SqliteStore, session: str, rng: random.Random) -> int:
    full = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
    with store.transaction():
        store.append(session, "consent", T0, {**full, "at": T0, "by": "token"})
        end = T0 + HOURS * 3_600_000
        for at in range(T0, end, 5_000):
            store.append(session, "signal", at, {"signal": "client.heartbeat", "at": at,
                                                 "data": {}, "participant": "p1"})
        for i in range(300):
            at = rng.randrange(T0, end)
            store.append(session, "signal", at, {"signal": "client.visibility", "at": at,
                                                 "data": {"state": "hidden"},
                                                 "participant": "p1", "seq": i})
        for i in range(40):
            at = rng.randrange(T0, end)
            alert = {"id": f"{session}-a{i}", "rule": rng.choice(["tab-hidden", "screenshot-key",
                                                                  "display-capture"]),
                     "severity": rng.choice(["notice", "warning", "critical"]),
                     "title": "t", "message": "m", "confidence": 0.7,
                     "suggested_response": ["ask"], "at": at,
                     "evidence": [{"signal": "client.visibility", "at": at,
                                   "data": {"state": "hidden"}}]}
            store.append_alert(session, alert)
            store.append(session, "ack", at + 5_000, {"id": alert["id"], "at": at + 5_000})
            verdict = rng.choice(["confirmed", "false_positive"])
            store.append(session, "feedback", at + 9_000, {"id": alert["id"],
                                                           "verdict": verdict, "at": at + 9_000})
        for i in range(6):
            at = T0 + i * 1_000_000
            store.append(session, "status", at, {"blind": True, "at": at, "reasons": ["x"]})
            store.append(session, "status", at + 60_000, {"blind": False, "at": at + 60_000,
                                                          "reasons": []})
    return len(store.entries(session))


def main() -> None:
    rng = random.Random(6)
    with tempfile.TemporaryDirectory() as tmp, \
            SqliteStore(Path(tmp) / "bench.db", synchronous="NORMAL") as store:
        entries = _fill(store, "s0", rng)
        runs = 5
        timings: dict[str, float] = {"build": 0.0, "html": 0.0, "json": 0.0}
        size = 0
        for _ in range(runs):
            t0 = time.perf_counter()
            report = build_report(store, "s0")
            t1 = time.perf_counter()
            page = render_html(report)
            t2 = time.perf_counter()
            render_json(report)
            t3 = time.perf_counter()
            timings["build"] += t1 - t0
            timings["html"] += t2 - t1
            timings["json"] += t3 - t2
            size = len(page.encode())
        for i in range(1, 20):
            _fill(store, f"s{i}", rng)
        t0 = time.perf_counter()
        rows = tuning(store, T0, T0 + 10 * 3_600_000)
        tuning_s = time.perf_counter() - t0
    body = (
        f"One {HOURS}-hour session, {entries} audit entries (heartbeat every 5 s, 300 other "
        f"signals, 40 alerts with ack and feedback, 6 blind periods), mean of {runs} runs:\n\n"
        "| step | ms |\n|---|---|\n"
        f"| build_report (read, verify chain, assemble) | {timings['build'] / runs * 1000:.0f} |\n"
        f"| render_html | {timings['html'] / runs * 1000:.0f} |\n"
        f"| render_json | {timings['json'] / runs * 1000:.0f} |\n\n"
        f"HTML report size: {size / 1024:.0f} KiB (self-contained). "
        f"`tuning` over 20 such sessions ({len(rows)} rules): {tuning_s * 1000:.0f} ms."
    )
    print(body)
    write_section("report", "Integrity report and tuning view", body)


if __name__ == "__main__":
    main()
