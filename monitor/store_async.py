"""The audit store for asyncio code: every call runs on one dedicated writer thread.

:class:`AsyncStore` wraps a :class:`~monitor.store.SqliteStore`; the event loop never touches
SQLite. Calls run in the order they were made. The calls of one event-loop turn reach the
writer thread together: reads and alerts at the end of that turn, other writes after up to
``linger_s`` (so more can join them). Writes handed over together are committed in one
transaction of at most ``max_batch`` (group commit; if one fails, the group is replayed with a
savepoint per write, so only the bad one fails): an ``await store.append(...)`` returns only
once its entry is committed and fsynced, yet a burst of signals costs one fsync, not one each.
Commits start at most once per ``commit_interval_s``: after a quiet spell a write is committed
at once; under load, what arrives meanwhile waits for the next commit and shares it. Inside a
group, each run of appends and alerts (between other writes, in call order) reaches SQLite as
one :meth:`~monitor.store.SqliteStore.write_many` call.

    store = AsyncStore(SqliteStore("var/sessionguard.db"), registry=registry)
    seq = await store.append_alert(session, alert.to_wire(0) minus "seq", webhook_urls)
    missed = await store.alerts_after(session, after)
    await store.aclose()          # flush what is queued, then close
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Histogram

from monitor.store import (
    DEFAULT_RETENTION_MS,
    AlertItem,
    AppendItem,
    Entry,
    OutboxItem,
    SqliteStore,
    Verification,
)
from signals.errors import StorageError

__all__ = ["AsyncStore"]

T = TypeVar("T")
_log = logging.getLogger("sessionguard.store")

_WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class _Op:
    """One queued call. ``item`` is set for a plain append or an alert (``fn`` then makes the
    same call alone): the writer thread hands each run of those to
    :meth:`SqliteStore.write_many`."""

    fn: Callable[[SqliteStore], Any]
    write: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    queued: float = field(default_factory=time.perf_counter)
    item: AppendItem | AlertItem | None = None


def _resolve_all(items: list[tuple[_Op, bool, Any]]) -> None:
    for op, ok, value in items:
        if op.future.done():  # cancelled by its caller
            continue
        if ok:
            op.future.set_result(value)
        else:
            op.future.set_exception(value)


class AsyncStore:
    """Async facade over one :class:`SqliteStore` run by a dedicated writer thread.

    ``registry`` (optional) receives ``sessionguard_audit_write_seconds``: the time from a
    write being queued to its commit.
    """

    def __init__(self, store: SqliteStore | str | Path, *,
                 registry: CollectorRegistry | None = None, max_batch: int = 256,
                 linger_s: float = 0.0, checkpoint_interval_s: float = 1.0,
                 commit_interval_s: float = 0.0,
                 clock: Callable[[], int] | None = None) -> None:
        # ``clock`` (epoch ms) dates webhook outbox rows; see SqliteStore
        self.store = (store if isinstance(store, SqliteStore)
                      else SqliteStore(store, clock=clock))
        if clock is not None:
            self.store.clock = clock
        self._max_batch = max_batch
        self._linger_s = linger_s
        # Under load every event-loop turn holds an alert, and alerts do not linger: without
        # a floor between commits the writer committed a handful of entries at a time, and
        # each commit's fixed cost (the write-ahead log's frame headers and checksums, the
        # fsync, one wake-up of the event loop per batch) dominated. Measured (bench_load,
        # 1,000 sessions, FULL): 3 ms took 5-8 % off the sidecar's CPU per signal, 10 ms
        # 12-19 %, longer no more.
        self._commit_interval_s = commit_interval_s
        # WAL checkpoints (copying the log back into the database file, with its fsync) run
        # on their own connection and thread, so a commit never waits for one. Measured under
        # load before this: SQLite's automatic checkpoint inside a commit held alerts back
        # for 100-300 ms every few seconds.
        #
        # A passive checkpoint copies the frames that were in the log when it started; the
        # log restarts from its beginning only if a write transaction begins while every
        # frame is copied. Under steady load commits land during every checkpoint, so that
        # never happened and the log file grew without bound (measured: 150 MB in 3 s next to
        # a 14 MB database). So after each checkpoint the writer thread, between two of its
        # transactions, copies the few frames written meanwhile (``_restart_wal``): its next
        # transaction then restarts the log.
        self._stop_checkpoints = threading.Event()
        self._restart_wal = threading.Event()
        self._checkpointer: threading.Thread | None = None
        if checkpoint_interval_s > 0 and str(self.store.path) != ":memory:":
            self.store.automatic_checkpoints(False)
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, args=(checkpoint_interval_s,),
                name="sessionguard-checkpoint", daemon=True)
            self._checkpointer.start()
        # Calls made on an event loop gather in a per-loop list that is handed to the writer
        # thread in one piece: at once for a read or an alert (someone is waiting for it),
        # after ``linger_s`` for other writes (so a burst shares one commit and one fsync),
        # and the thread is woken once per hand-over, not once per call. Measured under load
        # (bench_load, 500 sessions): that about halved the CPU the hand-offs cost.
        self._queue: queue.SimpleQueue[list[_Op] | None] = queue.SimpleQueue()
        self._pending: dict[asyncio.AbstractEventLoop,
                            tuple[list[_Op], asyncio.Handle | None]] = {}
        self._closing = False
        self._write_seconds = None if registry is None else Histogram(
            "sessionguard_audit_write_seconds",
            "Time from an audit write being queued to its commit, in seconds.",
            buckets=_WRITE_BUCKETS, registry=registry)
        self._thread = threading.Thread(target=self._run, name="sessionguard-store",
                                        daemon=True)
        self._thread.start()

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        last_start = -float("inf")
        while True:
            first = self._queue.get()
            if first is None:
                break
            wait = last_start + self._commit_interval_s - time.perf_counter()
            if wait > 0:  # what arrives meanwhile joins this commit
                time.sleep(wait)
            last_start = time.perf_counter()
            batch = list(first)
            stop = False
            # whatever else the loop(s) handed over meanwhile joins this commit
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            for i in range(0, len(batch), self._max_batch):  # bounded transactions
                self._run_batch(batch[i:i + self._max_batch])
            if self._restart_wal.is_set():
                self._restart_wal.clear()
                self._copy_log_tail()
            if stop:
                break
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            self._checkpointer.join()
        self.store.close()  # the last connection to close checkpoints what is left

    def _checkpoint_loop(self, interval_s: float) -> None:
        try:
            db = sqlite3.connect(str(self.store.path), timeout=10.0, isolation_level=None,
                                 check_same_thread=False)
        except sqlite3.Error as exc:
            _log.warning("audit store checkpoints fall back to SQLite's own: %s",
                         type(exc).__name__)
            self.store.automatic_checkpoints(True)
            return
        try:
            while not self._stop_checkpoints.wait(interval_s):
                try:
                    busy, log, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    _log.warning("audit store checkpoint failed: %s", type(exc).__name__)
                    continue
                if not busy and log > 0:
                    self._restart_wal.set()
        finally:
            db.close()

    def _copy_log_tail(self) -> None:
        """On the writer thread, between transactions: checkpoint the frames written since the
        checkpointer's last run, so the next transaction restarts the log."""
        try:
            self.store.checkpoint()
        except StorageError as exc:
            _log.warning("audit store checkpoint failed: %s", exc)

    def _run_batch(self, batch: list[_Op]) -> None:
        results: list[tuple[_Op, bool, Any]] = []
        writes: list[_Op] = []
        for op in batch:
            if op.write:
                writes.append(op)
                continue
            results.extend(self._commit(writes))
            writes = []
            try:
                results.append((op, True, op.fn(self.store)))
            except Exception as exc:  # handed to the awaiting caller
                results.append((op, False, exc))
        results.extend(self._commit(writes))
        self._deliver(results)

    def _commit(self, writes: list[_Op]) -> list[tuple[_Op, bool, Any]]:
        """Commit ``writes`` as one transaction. If one of them fails, the group is rolled
        back and replayed with a savepoint per write, so only the bad write fails."""
        if not writes:
            return []
        results: list[tuple[_Op, bool, Any]] = []
        try:
            with self.store.transaction():
                results = self._apply(writes)
        except Exception:
            results = self._commit_one_by_one(writes)
        if self._write_seconds is not None:
            done = time.perf_counter()
            for op, ok, _ in results:
                if ok:
                    self._write_seconds.observe(done - op.queued)
        return results

    def _apply(self, writes: list[_Op]) -> list[tuple[_Op, bool, Any]]:
        """Run ``writes`` in call order inside the current transaction; the first failure
        raises. Each run of appends and alerts is one :meth:`SqliteStore.write_many` call:
        one statement for all their entries and one head write per session, where one by one
        each entry took two to four statements and a nested transaction. Measured (callgrind,
        writer thread, 1,000 sessions, groups of 20 signals + 5 alerts): 25 % fewer
        instructions per entry; wall-clock thread CPU per entry 20-30 % lower."""
        results: list[tuple[_Op, bool, Any]] = []
        run: list[_Op] = []
        for op in writes:
            if op.item is not None:
                run.append(op)
                continue
            if run:
                self._write_run(run, results)
                run = []
            results.append((op, True, op.fn(self.store)))
        if run:
            self._write_run(run, results)
        return results

    def _write_run(self, run: list[_Op], results: list[tuple[_Op, bool, Any]]) -> None:
        values = self.store.write_many([op.item for op in run if op.item is not None])
        results.extend((op, True, value) for op, value in zip(run, values, strict=True))

    def _commit_one_by_one(self, writes: list[_Op]) -> list[tuple[_Op, bool, Any]]:
        results: list[tuple[_Op, bool, Any]] = []
        try:
            with self.store.transaction() as db:
                for op in writes:
                    db.execute("SAVEPOINT op")
                    try:
                        value = op.fn(self.store)
                    except Exception as exc:  # handed to the caller
                        db.execute("ROLLBACK TO op")
                        db.execute("RELEASE op")
                        self.store.forget_heads()
                        if isinstance(exc, sqlite3.Error):
                            exc = StorageError(f"audit store write failed: {exc}")
                        results.append((op, False, exc))
                    else:
                        db.execute("RELEASE op")
                        results.append((op, True, value))
        except Exception as exc:  # the whole group failed to commit
            error = exc if isinstance(exc, StorageError) else StorageError(
                f"audit store commit failed: {exc}")
            return [(op, False, error) for op in writes]
        return results

    @staticmethod
    def _deliver(results: list[tuple[_Op, bool, Any]]) -> None:
        """Hand the results of one batch back: one wake-up per event loop, not one per op
        (each wake-up is a write to the loop's self-pipe)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, bool, Any]]] = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, items in by_loop.items():
            # RuntimeError: the caller's loop is gone; the writes are committed (or not).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_all, items)

    def _submit(self, fn: Callable[[SqliteStore], T], write: bool, urgent: bool = False,
                item: AppendItem | AlertItem | None = None) -> asyncio.Future[T]:
        if self._closing:
            raise StorageError("the audit store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        op = _Op(fn, write, loop, future, item=item)
        pending = self._pending.get(loop)
        soon = urgent or not write or self._linger_s <= 0
        if pending is None or (soon and pending[1] is not None):
            # A read or an alert never waits for the linger (the writes before it go along);
            # it still waits for the end of this loop turn, so the alerts and reads of one
            # turn share one wake-up of the writer thread.
            if pending is not None and pending[1] is not None:
                pending[1].cancel()
            handle = None if soon else loop.call_later(self._linger_s, self._hand_over, loop)
            pending = self._pending[loop] = (pending[0] if pending else [], handle)
            if handle is None:
                loop.call_soon(self._hand_over, loop)
        pending[0].append(op)
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        """Give the calls gathered on ``loop`` to the writer thread, in order."""
        ops, handle = self._pending.pop(loop, ([], None))
        if handle is not None:
            handle.cancel()
        if ops:
            self._queue.put(ops)

    def _hand_over_all(self) -> None:
        for loop in list(self._pending):
            self._hand_over(loop)

    async def _call(self, fn: Callable[[SqliteStore], T], write: bool,
                    urgent: bool = False) -> T:
        return await self._submit(fn, write, urgent)

    # -- lifecycle --------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Run everything already queued, then close the database."""
        if not self._closing:
            self._closing = True
            self._hand_over_all()
            self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def close(self) -> None:
        """Blocking :meth:`aclose`, for code outside the event loop."""
        if not self._closing:
            self._closing = True
            self._hand_over_all()
            self._queue.put(None)
        self._thread.join()

    # -- the ledger -------------------------------------------------------------------------
    async def append(self, session: str, kind: str, at: int, body: dict[str, Any]) -> Entry:
        return await self.append_soon(session, kind, at, body)

    def append_soon(self, session: str, kind: str, at: int,
                    body: dict[str, Any]) -> asyncio.Future[Entry]:
        """Queue an append now (in call order with every other call) and return the future
        of its entry, without a task: await it later, before anything that must follow the
        commit (an acknowledgement)."""
        return self._submit(lambda s: s.append(session, kind, at, body), True,
                            item=(session, kind, at, body))

    async def append_alert(self, session: str, alert: dict[str, Any],
                           webhook_urls: Sequence[str] = ()) -> int:
        urls = tuple(webhook_urls)
        # urgent: a clinician is waiting for this one; it does not linger for company
        return await self._submit(lambda s: s.append_alert(session, alert, urls), True, True,
                                  item=(session, alert, urls))

    async def alerts_after(self, session: str, seq: int) -> list[dict[str, Any]]:
        return await self._call(lambda s: s.alerts_after(session, seq), False)

    async def last_seq(self, session: str) -> int:
        return await self._call(lambda s: s.last_seq(session), False)

    async def entries(self, session: str, kinds: Collection[str] | None = None) -> list[Entry]:
        return await self._call(lambda s: s.entries(session, kinds), False)

    async def sessions(self) -> list[str]:
        return await self._call(lambda s: s.sessions(), False)

    async def verify(self, session: str) -> Verification:
        return await self._call(lambda s: s.verify(session), False)

    async def purge(self, older_than_ms: int = DEFAULT_RETENTION_MS,
                    now: int | None = None) -> list[str]:
        return await self._call(lambda s: s.purge(older_than_ms, now), True)

    async def purge_periodically(
        self, older_than_ms: int = DEFAULT_RETENTION_MS, interval_s: float = 3600.0,
        clock: Callable[[], int] | None = None,
        on_purge: Callable[[list[str]], None] | None = None,
    ) -> None:
        """Apply the retention now and then every ``interval_s`` until cancelled (run it as a
        task). ``clock`` gives epoch ms; ``on_purge`` receives each round's purged ids."""
        while True:
            try:
                gone = await self.purge(older_than_ms, None if clock is None else clock())
            except StorageError as exc:
                _log.warning("retention purge failed: %s", exc)
            else:
                if gone:
                    _log.info("retention purge removed %d session(s)", len(gone))
                if on_purge is not None:
                    on_purge(gone)
            await asyncio.sleep(interval_s)

    # -- the webhook outbox -----------------------------------------------------------------
    async def enqueue(self, session: str, url: str, body: dict[str, Any], now: int) -> int:
        return await self._call(lambda s: s.enqueue(session, url, body, now), True)

    async def due(self, now: int, urls: Sequence[str] | None = None, limit: int = 100,
                  exclude: Collection[int] = ()) -> list[OutboxItem]:
        excluded = tuple(exclude)
        return await self._call(lambda s: s.due(now, urls, limit, excluded), False)

    async def next_due_at(self, urls: Sequence[str] | None = None,
                          exclude: Collection[int] = ()) -> int | None:
        excluded = tuple(exclude)
        return await self._call(lambda s: s.next_due_at(urls, excluded), False)

    async def abandon_other_targets(self, urls: Collection[str], now: int,
                                    error: str) -> list[str]:
        kept = tuple(urls)
        return await self._call(lambda s: s.abandon_other_targets(kept, now, error), True)

    async def pending(self) -> int:
        return await self._call(lambda s: s.pending(), False)

    async def mark_delivered(self, item_id: int, now: int, status: int) -> None:
        await self._call(lambda s: s.mark_delivered(item_id, now, status), True)

    async def reschedule(self, item_id: int, next_at: int, error: str,
                         status: int | None = None) -> int:
        return await self._call(lambda s: s.reschedule(item_id, next_at, error, status), True)

    async def abandon(self, item_id: int, now: int, error: str,
                      status: int | None = None) -> None:
        await self._call(lambda s: s.abandon(item_id, now, error, status), True)

    async def outbox(self, session: str | None = None) -> list[dict[str, Any]]:
        return await self._call(lambda s: s.outbox(session), False)
