"""Audit store throughput and latency: sync appends vs the async group-committing writer,
``synchronous=FULL`` vs ``NORMAL``. Writes its section of ``bench/RESULTS.md``."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bench.results import write_section
from monitor.store import SqliteStore
from monitor.store_async import AsyncStore

__all__ = ["main"]

_BODY = {"signal": "client.visibility", "participant": "p1", "data": {"state": "hidden"},
         "source": "client", "confidence": 1.0}


def _sync_rate(path: Path, synchronous: str, n: int) -> float:
    with SqliteStore(path, synchronous=synchronous) as store:
        start = time.perf_counter()
        for i in range(n):
            store.append("bench", "signal", i, _BODY)
        return n / (time.perf_counter() - start)


async def _async_run(path: Path, synchronous: str, n: int, sessions: int,
                     rate_per_s: float | None) -> tuple[float, float, float]:
    """``n`` writes offered at ``rate_per_s`` (``None``: all at once); returns entries/s and
    p50/p99 latency in ms."""
    store = AsyncStore(SqliteStore(path, synchronous=synchronous))
    latencies: list[float] = []

    async def one(i: int) -> None:
        t0 = time.perf_counter()
        if i % 50 == 0:
            await store.append_alert(f"s{i % sessions}", {"type": "alert", "at": i, "rule": "r"})
        else:
            await store.append(f"s{i % sessions}", "signal", i, _BODY)
        latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    tasks = []
    for i in range(n):
        if rate_per_s is not None:
            delay = start + i / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    await store.aclose()
    latencies.sort()
    return (n / elapsed, statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000)


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("FULL", "NORMAL"):
            rate = _sync_rate(Path(tmp) / f"sync-{sync}.db", sync, 2000)
            rows.append(f"| sync `append`, one per transaction | {sync} | {rate:,.0f} | – | – |")
        for sync in ("FULL", "NORMAL"):
            for label, n, offered in (("2,000 writes/s offered (the load test's signal rate)",
                                       10_000, 2000.0),
                                      ("20,000 writes queued at once (saturation)",
                                       20_000, None)):
                rate, p50, p99 = asyncio.run(
                    _async_run(Path(tmp) / f"async-{sync}-{n}.db", sync, n, 100, offered))
                rows.append(f"| `AsyncStore`, {label}, 100 sessions | {sync} | "
                            f"{rate:,.0f} | {p50:.2f} | {p99:.2f} |")
    table = ("| workload | synchronous | entries/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n"
             + "\n".join(rows))
    body = (table + "\n\nLatency is from `await store.append(...)` to its commit (fsync "
            "included with FULL). The writer thread commits what is queued together, so FULL "
            "costs one fsync per group, not per entry.")
    print(table)
    write_section("store", "Audit store (SQLite, WAL)", body)


if __name__ == "__main__":
    main()
