"""The async facade: writes off the loop, group commit, ordering and error isolation."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from monitor.store import AlertItem, AppendItem, SqliteStore
from monitor.store_async import AsyncStore
from signals.errors import StorageError
from tests.store.conftest import alert


def count_commits(store: AsyncStore) -> list[int]:
    """Count the store's outer transactions (commits) from now on: ``[n]``, updated live."""
    commits = [0]
    original = store.store.transaction

    def counting() -> object:
        commits[0] += not store.store._db.in_transaction  # outer transactions only
        return original()

    store.store.transaction = counting  # type: ignore[method-assign,assignment]
    return commits


async def test_concurrent_alerts_get_unique_contiguous_seqs(db_path: Path) -> None:
    registry = CollectorRegistry()
    store = AsyncStore(db_path, registry=registry)
    alerts = [store.append_alert(f"s{i % 3}", alert(1000 + i)) for i in range(150)]
    signals = [store.append(f"s{i % 3}", "signal", 1000 + i, {"n": i}) for i in range(150)]
    seqs, _entries = await asyncio.gather(asyncio.gather(*alerts), asyncio.gather(*signals))
    for s in range(3):
        mine = sorted(seq for i, seq in enumerate(seqs) if i % 3 == s)
        assert mine == list(range(1, 51))
    for s in range(3):
        result = await store.verify(f"s{s}")
        assert result.ok and result.checked == 100
    assert registry.get_sample_value("sessionguard_audit_write_seconds_count") == 300
    await store.aclose()


async def test_writes_run_on_the_store_thread(db_path: Path) -> None:
    store = AsyncStore(db_path)
    seen: list[str] = []
    original = store.store.write_many  # appends reach the store through it

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    store.store.write_many = spy  # type: ignore[method-assign,assignment]
    await store.append("s1", "status", 1, {"blind": False})
    assert seen == ["sessionguard-store"] != [threading.current_thread().name]
    await store.aclose()


async def test_one_bad_write_fails_alone(db_path: Path) -> None:
    store = AsyncStore(db_path)
    results = await asyncio.gather(
        store.append("s1", "signal", 1, {"ok": 1}),
        store.append("s1", "nonsense", 2, {}),
        store.append_alert("s1", {"type": "alert"}),
        store.append("s1", "signal", 3, {"ok": 3}),
        return_exceptions=True)
    assert isinstance(results[1], StorageError) and isinstance(results[2], StorageError)
    assert [e["body"] for e in await store.entries("s1")] == [{"ok": 1}, {"ok": 3}]
    assert (await store.verify("s1")).ok
    await store.aclose()


async def test_reads_see_preceding_writes_in_order(db_path: Path) -> None:
    store = AsyncStore(db_path)
    write = asyncio.ensure_future(store.append_alert("s1", alert(5)))
    read = asyncio.ensure_future(store.alerts_after("s1", 0))
    assert await write == 1
    assert [a["seq"] for a in await read] == [1]
    assert await store.sessions() == ["s1"]
    assert await store.last_seq("s1") == 1
    await store.aclose()


async def test_aclose_flushes_queued_writes_then_refuses(db_path: Path) -> None:
    store = AsyncStore(db_path)
    pending = [asyncio.ensure_future(store.append_alert("s1", alert(i))) for i in range(20)]
    await asyncio.sleep(0)  # let every append reach the queue
    await store.aclose()
    assert [await p for p in pending] == list(range(1, 21))
    with pytest.raises(StorageError, match="closed"):
        await store.append("s1", "signal", 1, {})
    with SqliteStore(db_path) as check:
        assert check.last_seq("s1") == 20 and check.verify("s1").ok


async def test_outbox_through_the_facade(db_path: Path) -> None:
    store = AsyncStore(db_path, clock=lambda: 10)
    await store.append_alert("s1", alert(10), ["http://h/x"])
    (item,) = await store.due(10)
    assert await store.next_due_at() == 10 and await store.pending() == 1
    assert await store.reschedule(item.id, 20, "down") == 1
    await store.mark_delivered(item.id, 21, 200)
    assert await store.pending() == 0
    assert (await store.outbox())[0]["delivered_at"] == 21
    assert await store.purge(0, now=10**9) == ["s1"]
    await store.aclose()


async def test_purge_periodically_applies_the_retention(db_path: Path) -> None:
    store = AsyncStore(db_path)
    day = 86_400_000
    await store.append("old", "signal", 1 * day, {})
    await store.append("new", "signal", 40 * day, {})
    rounds: asyncio.Queue[list[str]] = asyncio.Queue()
    clock = [41 * day]
    task = asyncio.ensure_future(store.purge_periodically(
        30 * day, interval_s=0.01, clock=lambda: clock[0], on_purge=rounds.put_nowait))
    assert await asyncio.wait_for(rounds.get(), 10) == ["old"]
    clock[0] = 80 * day
    while (gone := await asyncio.wait_for(rounds.get(), 10)) == []:
        pass
    assert gone == ["new"] and await store.sessions() == []
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.aclose()


async def test_a_write_failing_after_its_append_does_not_break_the_chain(db_path: Path) -> None:
    """In a group commit a write that appends and then fails is rolled back to its savepoint;
    the next write in the same group must chain onto the entry before it."""
    store = AsyncStore(db_path)

    def append_then_fail(s: SqliteStore) -> None:
        s.append("s1", "signal", 2, {"n": "rolled back"})
        raise StorageError("fails after appending")

    # queued without awaiting, so the writer thread takes all three as one group
    first = store.append_soon("s1", "signal", 1, {"n": 1})
    failing = store._submit(append_then_fail, True)
    last = store.append_soon("s1", "signal", 3, {"n": 3})
    results = await asyncio.gather(first, failing, last, return_exceptions=True)
    assert isinstance(results[1], StorageError)
    assert [e["body"] for e in await store.entries("s1")] == [{"n": 1}, {"n": 3}]
    assert (await store.verify("s1")).ok
    await store.aclose()


async def test_a_write_lingers_to_share_its_commit(db_path: Path) -> None:
    store = AsyncStore(db_path, linger_s=1.0)
    commits = count_commits(store)
    first = store.append_soon("s1", "signal", 1, {"n": 1})
    await asyncio.sleep(0.05)  # the first write waits for company ...
    assert not first.done()
    second = store.append_soon("s2", "signal", 2, {"n": 2})  # ... and gets it
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    assert commits[0] == 1
    # a read never waits: it is answered at once even with a long linger
    assert len(await asyncio.wait_for(store.entries("s1"), timeout=0.5)) == 1
    await store.aclose()


async def test_checkpoints_run_beside_the_writer(db_path: Path) -> None:
    """The writer's connection never checkpoints inside a commit; a background connection
    copies the WAL into the database file instead."""
    store = AsyncStore(db_path, checkpoint_interval_s=0.05)
    assert store.store._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    empty_size = db_path.stat().st_size
    await asyncio.gather(*(store.append(f"s{i % 5}", "signal", i, {"pad": "x" * 400, "i": i})
                           for i in range(400)))
    # 400 entries of ~0.5 KB sit in the WAL until a checkpoint copies them into the file
    # (SQLite's own checkpoint would wait for 1,000 pages, about 4 MB)
    async with asyncio.timeout(10):
        while db_path.stat().st_size < empty_size + 150_000:
            await asyncio.sleep(0.02)
    await store.aclose()
    with SqliteStore(db_path) as reopened:
        assert reopened.verify("s0").ok and reopened.verify("s0").checked == 80


def _log_restarts(wal: Path) -> int:
    """The write-ahead log header's checkpoint sequence: SQLite adds one each time the log
    restarts from its beginning (https://sqlite.org/fileformat.html, WAL header bytes 12-15)."""
    try:
        with wal.open("rb") as f:
            header = f.read(16)
    except FileNotFoundError:
        return 0
    return int.from_bytes(header[12:16], "big") if len(header) == 16 else 0


async def test_the_write_ahead_log_restarts_under_steady_writes(db_path: Path) -> None:
    """Commits landing during every background checkpoint used to keep the log from ever
    restarting, so its file grew without bound under load. Writes here never pause; the log
    must still restart again and again."""
    store = AsyncStore(SqliteStore(db_path, synchronous="NORMAL"), checkpoint_interval_s=0.01)
    wal = db_path.with_name(db_path.name + "-wal")
    first = None
    n = 0
    async with asyncio.timeout(60):
        while first is None or _log_restarts(wal) < first + 3:
            await asyncio.gather(*(store.append(f"s{i % 50}", "signal", i, {"pad": "x" * 200})
                                   for i in range(n, n + 5)))
            n += 5
            if first is None:
                first = _log_restarts(wal)
    assert store.store._db.execute("PRAGMA journal_size_limit").fetchone()[0] > 0
    await store.aclose()
    with SqliteStore(db_path) as reopened:
        assert reopened.verify("s0").ok and reopened.verify("s0").checked == (n + 49) // 50


async def test_writes_of_one_loop_turn_share_one_commit_without_linger(db_path: Path) -> None:
    """Calls made in one turn of the event loop reach the writer thread as one hand-over, so
    they commit together even with no linger (the thread is woken once, not once per call)."""
    store = AsyncStore(db_path, linger_s=0.0)
    commits = count_commits(store)
    writes = [store.append_soon(f"s{i % 7}", "signal", i, {"i": i}) for i in range(50)]
    await asyncio.wait_for(asyncio.gather(*writes), timeout=5)
    assert commits[0] == 1
    assert [e["body"]["i"] for e in await store.entries("s0")] == list(range(0, 50, 7))
    await store.aclose()


async def test_an_alert_never_lingers_and_takes_the_queued_writes_along(db_path: Path) -> None:
    """A clinician waits for an alert: it is committed at once even with a long linger, in
    one commit with the writes queued before it (a signal entry precedes its alert)."""
    store = AsyncStore(db_path, linger_s=30.0)
    signal_write = store.append_soon("s1", "signal", 1, {"n": 1})
    seq = await asyncio.wait_for(store.append_alert("s1", alert(2)), timeout=5)
    assert seq == 1 and signal_write.done()
    assert [e["kind"] for e in await store.entries("s1")] == ["signal", "alert"]
    await store.aclose()


async def test_a_large_hand_over_is_committed_in_bounded_transactions(db_path: Path) -> None:
    store = AsyncStore(db_path, max_batch=10)
    commits = count_commits(store)
    writes = [store.append_soon("s1", "signal", i, {"i": i}) for i in range(35)]
    await asyncio.wait_for(asyncio.gather(*writes), timeout=5)
    assert commits[0] == 4
    assert (await store.verify("s1")).ok and (await store.verify("s1")).checked == 35
    await store.aclose()


async def test_commits_start_at_most_once_per_commit_interval(db_path: Path) -> None:
    """Under load, alerts arriving while the last commit is recent wait for the next one and
    share it; the first write after a quiet spell is committed at once."""
    store = AsyncStore(db_path, commit_interval_s=3.0)
    commits = count_commits(store)
    started = time.perf_counter()
    assert await asyncio.wait_for(store.append_alert("s1", alert(1)), timeout=10) == 1
    # nothing to wait for: not held the interval. Half of it is left for the new database's
    # first fsyncs on a busy disk (this allowed 0.5 s, and it is the suite's only assertion
    # on elapsed time: the likeliest test behind one unexplained failed run in ten)
    assert time.perf_counter() - started < 1.5
    assert commits[0] == 1
    pending = []
    for i in range(2, 12):  # one alert every 5 ms, each in its own loop turn
        pending.append(asyncio.ensure_future(store.append_alert("s1", alert(i))))
        await asyncio.sleep(0.005)
    seqs = await asyncio.wait_for(asyncio.gather(*pending), timeout=10)
    assert seqs == list(range(2, 12))
    # without the interval each alert is its own commit (10); with it they share one or two
    assert commits[0] <= 3
    assert (await store.verify("s1")).ok
    await store.aclose()


async def test_no_commit_interval_commits_each_loop_turn(db_path: Path) -> None:
    store = AsyncStore(db_path, commit_interval_s=0.0)
    commits = count_commits(store)
    for i in range(1, 6):
        await asyncio.wait_for(store.append_alert("s1", alert(i)), timeout=5)
    assert commits[0] == 5
    await store.aclose()


async def test_appends_and_alerts_of_one_group_match_one_by_one(db_path: Path,
                                                                 tmp_path: Path) -> None:
    """A hand-over mixing sessions, appends and alerts (with webhooks) is one commit, and
    stores exactly what the same calls one by one on a plain store do."""
    items: list[AppendItem | AlertItem] = []
    for i in range(40):
        session = f"s{i % 3}"
        items.append((session, "signal", 1000 - i, {"i": i, "q": "\"\\\n"}))
        if i % 6 == 2:
            items.append((session, alert(2000 + i), ("http://h/x",)))
    store = AsyncStore(db_path)
    await store.append("s0", "status", 1, {"before": True})  # a cached head
    commits = count_commits(store)
    results = await asyncio.gather(*(
        store.append(*item) if len(item) == 4 else store.append_alert(*item) for item in items))
    assert commits[0] == 1
    with SqliteStore(tmp_path / "reference.db") as reference:
        reference.append("s0", "status", 1, {"before": True})
        expected = [reference.append(*item) if len(item) == 4 else reference.append_alert(*item)
                    for item in items]
        assert list(results) == expected
        for session in ("s0", "s1", "s2"):
            assert await store.entries(session) == reference.entries(session)
            assert (await store.verify(session)).ok
        assert [(r["session"], r["seq"], r["url"]) for r in await store.outbox()] == [
            (r["session"], r["seq"], r["url"]) for r in reference.outbox()]
    await store.aclose()


async def test_a_bad_item_in_a_batch_fails_alone(db_path: Path, tmp_path: Path) -> None:
    """Appends and alerts of one group go to the database in one call; when one of them is
    bad the group is replayed one write at a time, and only the bad ones fail."""
    store = AsyncStore(db_path)
    results = await asyncio.gather(
        store.append("s1", "signal", 1, {"n": 1}),
        store.append("s2", "signal", 1, {"n": 1}),
        store.append_alert("s1", alert(2)),
        store.append("s1", "nonsense", 3, {}),  # bad kind: fails before the transaction
        store.append("s2", "signal", 4, {"n": {1, 2}}),  # not JSON
        store.append_alert("s2", alert(5, extra={1, 2})),  # not JSON once it has its seq
        store.append_alert("s1", {"type": "alert"}),  # no at
        store.append("s2", "signal", 6, {"n": 6}),
        store.append_alert("s2", alert(7)),
        store.append("s1", "signal", 8, {"n": 8}),
        return_exceptions=True)
    bad = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert bad == [3, 4, 5, 6]
    assert all(isinstance(results[i], StorageError) for i in bad)
    assert (results[2], results[8]) == (1, 1)  # seqs contiguous: the bad alert took none
    with SqliteStore(tmp_path / "reference.db") as reference:
        reference.append("s1", "signal", 1, {"n": 1})
        reference.append("s2", "signal", 1, {"n": 1})
        reference.append_alert("s1", alert(2))
        reference.append("s2", "signal", 6, {"n": 6})
        reference.append_alert("s2", alert(7))
        reference.append("s1", "signal", 8, {"n": 8})
        for session in ("s1", "s2"):
            assert await store.entries(session) == reference.entries(session)
            assert (await store.verify(session)).ok
    await store.aclose()


async def test_a_write_between_batched_appends_sees_their_heads(db_path: Path) -> None:
    """Other writes keep their place between runs of appends, and find the heads the run
    before them wrote, even with no head cached (read from the ``sessions`` table)."""
    store = AsyncStore(db_path)
    commits = count_commits(store)
    seen: list[tuple[int, int]] = []

    def between(s: SqliteStore) -> int:
        seen.append(s._db.execute("SELECT count, next_seq FROM sessions WHERE session = 's1'"
                                  ).fetchone())
        s.forget_heads()
        return s.append("s1", "status", 4, {"between": True})["index"]

    async def write_between() -> int:
        return await store._submit(between, True)

    results = await asyncio.gather(
        store.append("s1", "signal", 1, {}), store.append_alert("s1", alert(2)),
        store.append("s2", "signal", 3, {}), write_between(),
        store.append("s1", "signal", 5, {}), store.append_alert("s1", alert(6)))
    assert commits[0] == 1
    assert seen == [(2, 2)] and results[3] == 2
    assert results[5] == 2 and results[4]["index"] == 3
    assert [e["kind"] for e in await store.entries("s1")] == [
        "signal", "alert", "status", "signal", "alert"]
    assert (await store.verify("s1")).ok and (await store.verify("s2")).ok
    await store.aclose()
