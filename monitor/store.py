"""The audit store: a hash-chained ledger per session, alert sequence numbers, and the
persistent webhook outbox.

Every entry is ``{"session", "index", "kind", "at", "body", "prev_hash", "hash"}``; ``hash`` is
the SHA-256 of the canonical JSON of ``(session, index, kind, at, body, prev_hash)``, and the
first entry of a session has ``prev_hash`` of 64 zeros, so an edited, deleted or reordered
entry is found by :meth:`SqliteStore.verify`. The ``sessions`` table keeps each session's
head (entry count and last hash) so that cutting entries off the end is found too.

Everything stored is derived data (signals, alerts, decisions): never media.

:class:`SqliteStore` is the synchronous API (the CLI, reports, tests, the writer thread).
The server must not call it from the event loop: it uses :class:`monitor.store_async.AsyncStore`,
which runs one :class:`SqliteStore` on a dedicated writer thread.

Durability: the database runs in WAL mode with ``synchronous=FULL``. WAL with ``NORMAL``
already survives SIGKILL of the process (a committed transaction is in the WAL file, in the
operating system's cache); ``FULL`` also fsyncs the WAL at every commit, so an alert a clinician
has seen is never rolled back by a power cut or kernel crash — otherwise its ``seq`` could be
reissued to a different alert after the restart, breaking ``resume``. The writer thread commits
queued writes in groups, which keeps the fsync cost per entry small under load.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypedDict, cast, get_args

from signals.errors import StorageError

__all__ = [
    "DEFAULT_DB_PATH",
    "DEFAULT_RETENTION_MS",
    "GENESIS_HASH",
    "KINDS",
    "AlertItem",
    "AppendItem",
    "AuditStore",
    "Entry",
    "Kind",
    "OutboxItem",
    "SqliteStore",
    "Verification",
    "canonical_json",
    "entry_hash",
    "target_display",
]

Kind = Literal["signal", "alert", "delivery", "consent", "status", "feedback", "ack", "skip",
               "recording_request", "recording_decision"]
KINDS: tuple[str, ...] = get_args(Kind)
GENESIS_HASH = "0" * 64
DEFAULT_RETENTION_MS = 30 * 24 * 3600 * 1000
DEFAULT_DB_PATH = Path("var") / "sessionguard.db"


class Entry(TypedDict):
    session: str
    index: int
    kind: str
    at: int
    body: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of checking one session's chain. ``first_bad_index`` is the index of the
    first entry that does not verify (``None`` when ``ok``); ``problem`` says why."""

    ok: bool
    checked: int
    first_bad_index: int | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One pending webhook delivery: ``body`` is the exact JSON text to POST."""

    id: int
    session: str
    seq: int | None
    url: str
    body: str
    attempts: int
    next_at: int
    created_at: int


class AuditStore(Protocol):
    """What the server needs from an audit backend (SQLite is the embedded default)."""

    def append(self, session: str, kind: str, at: int, body: dict[str, Any]) -> Entry: ...
    def append_alert(self, session: str, alert: dict[str, Any],
                     webhook_urls: Sequence[str] = ()) -> int: ...
    def alerts_after(self, session: str, seq: int) -> list[dict[str, Any]]: ...
    def entries(self, session: str, kinds: Collection[str] | None = None) -> list[Entry]: ...
    def sessions(self) -> list[str]: ...
    def verify(self, session: str) -> Verification: ...
    def purge(self, older_than_ms: int = DEFAULT_RETENTION_MS,
              now: int | None = None) -> list[str]: ...
    def close(self) -> None: ...


#: outbox rows still to be tried (neither delivered nor abandoned)
_UNSETTLED = "delivered_at IS NULL AND abandoned_at IS NULL"
#: bytes the write-ahead log file is cut back to when it restarts (it may grow past this
#: between checkpoints under heavy load)
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
#: one webhook delivery queued: (session, seq, url, body JSON, due at, created at)
_OUTBOX_INSERT = ("INSERT INTO outbox (session, seq, url, body, next_at, created_at) "
                  "VALUES (?, ?, ?, ?, ?, ?)")
#: chain heads kept in memory; beyond this the least recently written are read again
_HEAD_CACHE = 10_000

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8, no NaN: the same value always gives the same text."""
    try:
        return _CANONICAL.encode(value)
    except (TypeError, ValueError) as exc:
        raise StorageError(f"entry body is not plain JSON: {exc}") from exc


def entry_hash(session: str, index: int, kind: str, at: int, body_json: str,
               prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry without its hash. ``body_json`` is the
    body's canonical JSON text (embedded as a value, not re-encoded)."""
    # Exactly canonical_json({"at", "body", "index", "kind", "prev_hash", "session"}), keys in
    # sorted order, with the (already canonical) body text spliced in rather than re-encoded.
    text = (f'{{"at":{int(at)},"body":{body_json},"index":{int(index)},'
            f'"kind":{canonical_json(kind)},"prev_hash":{canonical_json(prev_hash)},'
            f'"session":{canonical_json(session)}}}')
    return hashlib.sha256(text.encode()).hexdigest()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session   TEXT PRIMARY KEY,
    count     INTEGER NOT NULL,
    head_hash TEXT NOT NULL,
    next_seq  INTEGER NOT NULL,
    first_at  INTEGER NOT NULL,
    last_at   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    session   TEXT NOT NULL,
    idx       INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    body      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL,
    seq       INTEGER,
    PRIMARY KEY (session, idx)
);
CREATE UNIQUE INDEX IF NOT EXISTS entries_alert_seq ON entries (session, seq)
    WHERE seq IS NOT NULL;
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    session      TEXT NOT NULL,
    seq          INTEGER,
    url          TEXT NOT NULL,
    body         TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    last_status  INTEGER,
    last_error   TEXT,
    abandoned_at INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_at) WHERE delivered_at IS NULL;
-- abandoned_at: given up after webhooks.give_up_after_hours of failures (see abandon())
"""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _outbox_filter(urls: Sequence[str] | None,
                   exclude: Collection[int]) -> tuple[str, list[Any]]:
    """The ``AND ...`` of an outbox query for ``urls`` (``None``: any) without ``exclude``."""
    where, params = "", list[Any]()
    if urls is not None:
        where += f" AND url IN ({','.join('?' * len(urls))})"
        params.extend(urls)
    if exclude:
        where += f" AND id NOT IN ({','.join('?' * len(exclude))})"
        params.extend(exclude)
    return where, params


def target_display(url: str) -> str:
    """What logs and the ledger say about a webhook URL: scheme, host and port only (paths,
    queries and user info of webhook URLs often hold secrets)."""
    return _target(url)


def _target(url: str) -> str:
    """What the ledger says about a webhook URL: scheme, host and port only (paths and
    queries of webhook URLs often hold secrets)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}"


#: a plain append for :meth:`SqliteStore.write_many`: ``(session, kind, at, body)``
AppendItem = tuple[str, str, int, dict[str, Any]]
#: an alert for :meth:`SqliteStore.write_many`: ``(session, alert wire dict without seq,
#: webhook URLs)``
AlertItem = tuple[str, dict[str, Any], Sequence[str]]
#: a checked write: ``(session, kind, at, body, body JSON, webhook URLs)``; an alert has URLs
#: (maybe none) and its body JSON is made once it has its seq
_Prepared = tuple[str, str, int, dict[str, Any], str, Sequence[str] | None]


def _is_int(value: object) -> bool:
    """An SQLite INTEGER as Python reads it (text, REAL or BLOB in an integer column is a
    value no write of ours stored)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _index(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _decode_body(text: object) -> Any:
    """An entry's stored body, or ``None`` when it is not JSON text that we could have
    written (bytes, bad JSON, nested too deeply to read)."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _alert_seq(kind: object, body: Any) -> int | None:
    """What an entry's ``seq`` column must hold: an alert's ``seq`` from its body, else
    nothing."""
    if kind != "alert" or not isinstance(body, dict):
        return None
    seq = body.get("seq")
    return seq if _is_int(seq) else None


def _prepare(item: AppendItem | AlertItem) -> _Prepared:
    """Check one write before the write lock is taken (an alert's body is encoded with its
    seq, inside the transaction)."""
    if len(item) == 4:
        session, kind, at, body = item
        if kind not in KINDS:
            raise StorageError(f"unknown entry kind {kind!r}")
        if _alert_seq(kind, body) is not None:  # verify() checks it against the seq column
            raise StorageError("an alert with a seq is stored with append_alert, which gives it")
        if not isinstance(at, int) or isinstance(at, bool):
            raise StorageError("entry time must be epoch milliseconds as an int")
        return (session, kind, at, body, canonical_json(body), None)
    session, alert, urls = item
    alert_at = alert.get("at")
    if not isinstance(alert_at, int) or isinstance(alert_at, bool):
        raise StorageError("alert needs an integer 'at' (epoch ms)")
    return (session, "alert", alert_at, alert, "", urls)


class SqliteStore:
    """The embedded audit store (stdlib ``sqlite3``). Thread-safe (one connection, one lock);
    every public method is one transaction. Reopening the same path resumes every chain and
    alert sequence where it stopped.

    ``clock`` (epoch ms, default the wall clock) is the sidecar's own time: it dates the
    webhook outbox rows an alert queues (when the first attempt is due, and where the
    give-up time counts from), never the alert's ``at``, which comes from the patient's
    clock."""

    def __init__(self, path: str | Path = DEFAULT_DB_PATH, *, synchronous: str = "FULL",
                 busy_timeout_s: float = 10.0, clock: Callable[[], int] | None = None) -> None:
        if synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise StorageError(f"synchronous must be FULL, NORMAL or EXTRA, not {synchronous!r}")
        self.path = Path(path)
        self.clock: Callable[[], int] = clock or _wall_ms
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=busy_timeout_s,
                                       isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            # after the log is restarted, a write log grown past this is cut back to it
            self._db.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            self._db.executescript(_SCHEMA)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(outbox)")}
            if "abandoned_at" not in columns:  # a database from before abandoning existed
                self._db.execute("ALTER TABLE outbox ADD COLUMN abandoned_at INTEGER")
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot open the audit store {str(path)!r}: {exc}") from exc
        self._lock = threading.RLock()
        self._closed = False
        # Each session's (entry count, head hash, next alert seq), so a write needs no read.
        # Valid only while no other connection has written: PRAGMA data_version tells (checked
        # once per transaction); a rollback forgets it too.
        self._heads: dict[str, tuple[int, str, int]] = {}
        self._data_version = -1

    # -- plumbing ---------------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: the write lock is taken first, so two
        processes never interleave a chain). Nested calls join the outer transaction."""
        with self._lock:
            if self._closed:
                raise StorageError("the audit store is closed")
            if self._db.in_transaction:
                yield self._db
                return
            try:
                self._db.execute("BEGIN IMMEDIATE")
                version = self._db.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as exc:
                raise StorageError(f"audit store is not writable: {exc}") from exc
            if version != self._data_version:  # another process wrote meanwhile
                self._heads.clear()
                self._data_version = version
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._heads.clear()
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StorageError(f"audit store write failed: {exc}") from exc
                raise

    def automatic_checkpoints(self, on: bool) -> None:
        """SQLite's automatic WAL checkpoint inside a commit (on by default). Turn it off only
        when something else checkpoints (:class:`~monitor.store_async.AsyncStore` does, on
        its own connection)."""
        with self._lock:
            if not self._closed:
                self._db.execute(f"PRAGMA wal_autocheckpoint={1000 if on else 0}")

    def checkpoint(self) -> tuple[int, int, int]:
        """A passive WAL checkpoint on this connection, between transactions: ``(busy, frames
        in the log, frames copied to the database)``. When it copies every frame, the next
        write transaction starts the log again from the beginning instead of appending."""
        with self._lock:
            if self._closed or self._db.in_transaction:
                return (1, -1, -1)
            try:
                busy, log, done = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error as exc:
                raise StorageError(f"audit store checkpoint failed: {exc}") from exc
            return int(busy), int(log), int(done)

    def forget_heads(self) -> None:
        """Drop the cached chain heads (after rolling back to a savepoint inside a
        transaction; the next append reads them again)."""
        self._heads.clear()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._closed:
                raise StorageError("the audit store is closed")
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"audit store read failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the ledger -------------------------------------------------------------------------
    def _write(self, db: sqlite3.Connection, items: Sequence[_Prepared]) -> list[Entry | int]:
        """Chain ``items`` (checked by :func:`_prepare`) onto their sessions, in order, inside
        the current transaction: each plain append's :class:`Entry`, each alert's ``seq``.

        Every write of the ledger comes here, one item or a group commit's worth. The entries
        go in with one ``executemany``; each session's head (``sessions`` row) is written
        once, with its last state, after them, so a later statement in the transaction
        reads it current. Until then the heads of this call live in ``batch``; the cached
        heads it took are put back only once every statement has run (a failed statement
        leaves them out, to be read again)."""
        heads = self._heads
        # (count, head hash, next alert seq, first at here, greatest at here), most recently
        # written last
        batch: dict[str, tuple[int, str, int, int, int]] = {}
        rows: list[tuple[str, int, str, int, str, str, str, int | None]] = []
        outbox: list[tuple[str, int, str, str, int, int]] = []
        results: list[Entry | int] = []
        now: int | None = None  # the sidecar's time, for outbox rows (not the alert's at)
        for session, kind, at, body, body_json, urls in items:
            state = batch.pop(session, None)
            if state is None:
                head = heads.pop(session, None)
                if head is None:
                    row = db.execute("SELECT count, head_hash, next_seq FROM sessions "
                                     "WHERE session = ?", (session,)).fetchone()
                    head = ((0, GENESIS_HASH, 1) if row is None
                            else (int(row[0]), str(row[1]), int(row[2])))
                index, prev, next_seq = head
                first_at = last_at = at
            else:
                index, prev, next_seq, first_at, last_at = state
                last_at = max(last_at, at)
            if urls is None:  # a plain append
                seq = None
            else:  # an alert: its body is the wire dict with the session's next seq
                seq = next_seq
                next_seq += 1
                body = {**body, "seq": seq}
                body_json = canonical_json(body)
                if urls:
                    queued = now = self.clock() if now is None else now
                    outbox.extend((session, seq, url, body_json, queued, queued)
                                  for url in urls)
            digest = entry_hash(session, index, kind, at, body_json, prev)
            rows.append((session, index, kind, at, body_json, prev, digest, seq))
            results.append({"session": session, "index": index, "kind": kind, "at": at,
                            "body": body, "prev_hash": prev, "hash": digest}
                           if seq is None else seq)
            batch[session] = (index + 1, digest, next_seq, first_at, last_at)
        db.executemany("INSERT INTO entries (session, idx, kind, at, body, prev_hash, hash, seq) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        # One entry at a time, first_at was the first entry's at (it only counts when the
        # row is new) and last_at grew to the greatest at: the same with one write each.
        db.executemany("INSERT INTO sessions (session, count, head_hash, next_seq, first_at, "
                       "last_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session) DO UPDATE SET "
                       "count = excluded.count, head_hash = excluded.head_hash, "
                       "next_seq = excluded.next_seq, last_at = MAX(last_at, excluded.last_at)",
                       [(session, *state) for session, state in batch.items()])
        if outbox:
            db.executemany(_OUTBOX_INSERT, outbox)
        for session, (count, digest, next_seq, _, _) in batch.items():
            heads[session] = (count, digest, next_seq)
        while len(heads) > _HEAD_CACHE:  # bounded: drop the least recently written
            del heads[next(iter(heads))]
        return results

    def _append(self, db: sqlite3.Connection, session: str, kind: str, at: int,
                body: dict[str, Any]) -> Entry:
        return cast(Entry, self._write(db, [_prepare((session, kind, at, body))])[0])

    def append(self, session: str, kind: str, at: int, body: dict[str, Any]) -> Entry:
        """Append one entry to ``session``'s chain and return it (with index and hash)."""
        item = _prepare((session, kind, at, body))
        with self.transaction() as db:
            return cast(Entry, self._write(db, [item])[0])  # an append gives its entry

    def append_many(self, items: Iterable[AppendItem]) -> list[Entry]:
        """:meth:`append` each ``(session, kind, at, body)`` in order, in one transaction,
        and return their entries: the same rows, hashes and entries as one by one, with
        fewer statements (see :meth:`write_many`). All or nothing: a bad item (unknown kind,
        ``at`` not an int, a body that is not plain JSON) fails the call before anything is
        written."""
        return cast(list[Entry], self.write_many(list(items)))  # appends give entries

    def write_many(self, items: Sequence[AppendItem | AlertItem]) -> list[Entry | int]:
        """Plain appends ``(session, kind, at, body)`` and alerts ``(session, alert,
        webhook_urls)`` in order, in one transaction: each append's entry, each alert's
        ``seq``, exactly as :meth:`append` and :meth:`append_alert` one by one would store
        and return them. The writer thread of :class:`~monitor.store_async.AsyncStore`
        hands it each run of such calls in a group commit: one ``executemany`` for the
        entries and one head write per session instead of two to four statements and a
        nested transaction per entry.

        All or nothing: one bad item fails the whole call (a bad append before anything is
        written; an alert whose body is not plain JSON, inside the transaction)."""
        prepared = [_prepare(item) for item in items]
        if not prepared:
            return []
        with self.transaction() as db:
            return self._write(db, prepared)

    def append_alert(self, session: str, alert: dict[str, Any],
                     webhook_urls: Sequence[str] = ()) -> int:
        """Give ``alert`` (the wire dict, without ``seq``) the session's next ``seq``, store it
        as an ``alert`` entry and queue it for every webhook URL, all in one transaction.
        Returns the seq. The entry's ``at`` is the alert's ``at``; the outbox rows are due
        now by the store's ``clock`` (the alert's ``at`` may be minutes off: the patient's
        clock)."""
        item = _prepare((session, alert, tuple(webhook_urls)))
        canonical_json(alert)  # fail before taking the write lock
        with self.transaction() as db:
            return cast(int, self._write(db, [item])[0])  # an alert gives its seq

    def alerts_after(self, session: str, seq: int) -> list[dict[str, Any]]:
        """The alert wire dicts of ``session`` with ``seq`` greater than ``seq``, in order."""
        rows = self._read("SELECT body FROM entries WHERE session = ? AND seq > ? "
                          "ORDER BY seq", (session, seq))
        return [json.loads(r[0]) for r in rows]

    def last_seq(self, session: str) -> int:
        """The highest alert ``seq`` given in ``session`` (0 if none)."""
        rows = self._read("SELECT next_seq FROM sessions WHERE session = ?", (session,))
        return int(rows[0][0]) - 1 if rows else 0

    def entries(self, session: str, kinds: Collection[str] | None = None) -> list[Entry]:
        """Every entry of ``session`` (only those of ``kinds``, if given), in chain order.
        ``kinds`` spares decoding what is not wanted: a long session holds thousands of
        signals, and a clinician's acknowledgement needs only alerts, acks and feedback."""
        if kinds is None:
            rows = self._read("SELECT idx, kind, at, body, prev_hash, hash FROM entries "
                              "WHERE session = ? ORDER BY idx", (session,))
        else:
            wanted = sorted(set(kinds))
            rows = self._read("SELECT idx, kind, at, body, prev_hash, hash FROM entries "
                              f"WHERE session = ? AND kind IN ({', '.join('?' * len(wanted))}) "
                              "ORDER BY idx", (session, *wanted))
        return [Entry(session=session, index=r[0], kind=r[1], at=r[2], body=json.loads(r[3]),
                      prev_hash=r[4], hash=r[5]) for r in rows]

    def sessions(self) -> list[str]:
        """Every session id in the store, oldest first."""
        return [r[0] for r in self._read("SELECT session FROM sessions ORDER BY first_at, session")]

    def _snapshot(self, queries: Sequence[tuple[str, Sequence[Any]]]) -> list[list[Any]]:
        """Run read ``queries`` in one read transaction: they all see the same state of the
        database, even while another connection (the server) commits between them."""
        with self._lock:
            if self._closed:
                raise StorageError("the audit store is closed")
            if self._db.in_transaction:  # inside a write: that is a snapshot already
                return [self._read(sql, params) for sql, params in queries]
            try:
                self._db.execute("BEGIN DEFERRED")
                try:
                    return [self._db.execute(sql, params).fetchall() for sql, params in queries]
                finally:
                    self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"audit store read failed: {exc}") from exc

    def verify(self, session: str) -> Verification:
        """Walk ``session``'s chain and report the first entry that was edited, deleted,
        inserted or moved.

        The entries and the session's head record are read in one snapshot, so a chain that
        grows meanwhile is not mistaken for a broken one. Values no write would have stored
        (text where a number belongs, an infinite time, a body nested too deeply to read)
        make the chain broken at that entry, never an exception. The ``seq`` column, which
        is outside the hash but is what ``alerts_after`` (resume) reads, must match the
        alert's body: an alert's ``seq`` in its body, nothing for other kinds."""
        rows, heads = self._snapshot([
            ("SELECT idx, kind, at, body, prev_hash, hash, seq FROM entries "
             "WHERE session = ? ORDER BY idx", (session,)),
            ("SELECT count, head_hash FROM sessions WHERE session = ?", (session,))])
        if not heads:
            if rows:
                return Verification(False, 0, _index(rows[0][0], 0),
                                    "the session's head record is missing")
            raise StorageError(f"no session {session!r} in the audit store")
        prev = GENESIS_HASH
        for expected, (idx, kind, at, body, prev_hash, digest, seq) in enumerate(rows):
            if idx != expected or not _is_int(idx):
                return Verification(False, expected, expected,
                                    f"entry {expected} is missing (next stored entry is "
                                    f"{idx!r})")
            if prev_hash != prev:
                return Verification(False, expected, idx,
                                    f"entry {idx} does not follow entry {idx - 1} "
                                    "(prev_hash differs: deleted or reordered)")
            label = kind if isinstance(kind, str) else "?"
            decoded = _decode_body(body)
            recomputed = ""
            if (decoded is not None and isinstance(kind, str) and _is_int(at)
                    and isinstance(digest, str)):
                try:
                    recomputed = entry_hash(session, idx, kind, at, canonical_json(decoded),
                                            prev_hash)
                except (ValueError, RecursionError, StorageError):
                    recomputed = ""
            if not recomputed or recomputed != digest:
                return Verification(False, expected, idx,
                                    f"entry {idx} ({label}) was altered: its hash does not match")
            if seq != _alert_seq(kind, decoded):
                return Verification(False, expected, idx,
                                    f"entry {idx} ({label}) was altered: its seq column does not "
                                    "match its body (resume would miss or misplace it)")
            prev = digest
        count, head_hash = heads[0]
        if not _is_int(count):
            return Verification(False, len(rows), len(rows),
                                "the session's head record was altered (its entry count is "
                                "not a number)")
        if count < len(rows):
            return Verification(False, len(rows), count,
                                f"entries {count}..{len(rows) - 1} are not counted in the "
                                "session's head record (added behind its back)")
        if count != len(rows):
            return Verification(False, len(rows), len(rows),
                                f"entries {len(rows)}..{count - 1} are missing from the end")
        if head_hash != prev:
            return Verification(False, len(rows), max(len(rows) - 1, 0),
                                "the last entry differs from the recorded head")
        return Verification(True, len(rows))

    def purge(self, older_than_ms: int = DEFAULT_RETENTION_MS,
              now: int | None = None) -> list[str]:
        """Delete every session whose last entry is older than ``older_than_ms`` before ``now``
        (epoch ms, default the wall clock): its entries, head and outbox rows. Whole sessions
        only, so every remaining chain still verifies. Returns the purged session ids."""
        if older_than_ms < 0:
            raise StorageError("retention must not be negative")
        cutoff = (_wall_ms() if now is None else now) - older_than_ms
        with self.transaction() as db:
            old = [r[0] for r in db.execute("SELECT session FROM sessions WHERE last_at < ?",
                                            (cutoff,))]
            for session in old:
                db.execute("DELETE FROM entries WHERE session = ?", (session,))
                db.execute("DELETE FROM outbox WHERE session = ?", (session,))
                db.execute("DELETE FROM sessions WHERE session = ?", (session,))
                self._heads.pop(session, None)
        return old

    # -- the webhook outbox -----------------------------------------------------------------
    def _enqueue(self, db: sqlite3.Connection, session: str, seq: int | None, url: str,
                 body_json: str, now: int) -> int:
        cur = db.execute(_OUTBOX_INSERT, (session, seq, url, body_json, now, now))
        return int(cur.lastrowid or 0)

    def enqueue(self, session: str, url: str, body: dict[str, Any], now: int) -> int:
        """Queue ``body`` for POSTing to ``url``, due at ``now``. Returns the outbox id."""
        body_json = canonical_json(body)
        seq = body.get("seq") if isinstance(body.get("seq"), int) else None
        with self.transaction() as db:
            return self._enqueue(db, session, seq, url, body_json, now)

    def due(self, now: int, urls: Sequence[str] | None = None, limit: int = 100,
            exclude: Collection[int] = ()) -> list[OutboxItem]:
        """Undelivered outbox items due at ``now`` (oldest first), for ``urls`` if given,
        leaving out the ids in ``exclude`` (attempts in flight)."""
        if urls is not None and not urls:
            return []
        where, params = _outbox_filter(urls, exclude)
        sql = ("SELECT id, session, seq, url, body, attempts, next_at, created_at FROM outbox "
               f"WHERE {_UNSETTLED} AND next_at <= ?{where} ORDER BY next_at, id LIMIT ?")
        return [OutboxItem(*r) for r in self._read(sql, [now, *params, limit])]

    def next_due_at(self, urls: Sequence[str] | None = None,
                    exclude: Collection[int] = ()) -> int | None:
        """When the earliest undelivered item (of ``urls``, not in ``exclude``) falls due
        (epoch ms), or ``None``."""
        if urls is not None and not urls:
            return None
        where, params = _outbox_filter(urls, exclude)
        value = self._read(f"SELECT MIN(next_at) FROM outbox WHERE {_UNSETTLED}{where}",
                           params)[0][0]
        return None if value is None else int(value)

    def abandon_other_targets(self, urls: Collection[str], now: int,
                              error: str) -> list[str]:
        """Abandon (as :meth:`abandon` does, with a ledger entry each) every unsettled item
        whose URL is not in ``urls``: the targets configured now. Returns their URLs, one
        per item abandoned."""
        keep = sorted(set(urls))
        sql = f"SELECT id, url FROM outbox WHERE {_UNSETTLED}"
        if keep:
            sql += f" AND url NOT IN ({','.join('?' * len(keep))})"
        with self.transaction() as db:
            rows = db.execute(sql + " ORDER BY id", keep).fetchall()
            for item_id, _url in rows:
                self.abandon(item_id, now, error)
        return [str(url) for _id, url in rows]

    def pending(self) -> int:
        """How many outbox items are still to be delivered (not delivered, not abandoned)."""
        return int(self._read(f"SELECT COUNT(*) FROM outbox WHERE {_UNSETTLED}")[0][0])

    def mark_delivered(self, item_id: int, now: int, status: int) -> None:
        """Record a successful POST and write a ``delivery`` entry to the session's ledger."""
        with self.transaction() as db:
            row = db.execute("SELECT session, seq, url, attempts, delivered_at FROM outbox "
                             "WHERE id = ? AND abandoned_at IS NULL", (item_id,)).fetchone()
            if row is None or row[4] is not None:
                return  # purged or abandoned meanwhile, or already recorded
            session, seq, url, attempts, _ = row
            db.execute("UPDATE outbox SET delivered_at = ?, attempts = attempts + 1, "
                       "last_status = ?, last_error = NULL WHERE id = ?", (now, status, item_id))
            body = {"channel": "webhook", "target": _target(url), "seq": seq,
                    "status": status, "attempts": attempts + 1}
            self._append(db, session, "delivery", now, body)

    def reschedule(self, item_id: int, next_at: int, error: str,
                   status: int | None = None) -> int:
        """Record a failed attempt and when to try again. Returns the attempts so far."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?, "
                       "last_status = ? WHERE id = ? AND " + _UNSETTLED,
                       (next_at, error[:200], status, item_id))
            row = db.execute("SELECT attempts FROM outbox WHERE id = ?", (item_id,)).fetchone()
            return 0 if row is None else int(row[0])

    def abandon(self, item_id: int, now: int, error: str, status: int | None = None) -> None:
        """Give up on an item after its last failed attempt: it is never tried again, and a
        ``delivery`` entry with ``"abandoned": true`` goes to the session's ledger."""
        with self.transaction() as db:
            row = db.execute("SELECT session, seq, url, attempts FROM outbox "
                             f"WHERE id = ? AND {_UNSETTLED}", (item_id,)).fetchone()
            if row is None:
                return
            session, seq, url, attempts = row
            db.execute("UPDATE outbox SET abandoned_at = ?, attempts = attempts + 1, "
                       "last_status = ?, last_error = ? WHERE id = ?",
                       (now, status, error[:200], item_id))
            body = {"channel": "webhook", "target": _target(url), "seq": seq,
                    "status": status, "attempts": attempts + 1, "abandoned": True,
                    "error": error[:200]}
            self._append(db, session, "delivery", now, body)

    def outbox(self, session: str | None = None) -> list[dict[str, Any]]:
        """Every outbox row (delivered, pending or abandoned), for reports and tests."""
        sql = ("SELECT id, session, seq, url, attempts, next_at, created_at, delivered_at, "
               "last_status, last_error, abandoned_at FROM outbox")
        params: tuple[Any, ...] = ()
        if session is not None:
            sql += " WHERE session = ?"
            params = (session,)
        names = ("id", "session", "seq", "url", "attempts", "next_at", "created_at",
                 "delivered_at", "last_status", "last_error", "abandoned_at")
        return [dict(zip(names, r, strict=True)) for r in self._read(sql + " ORDER BY id", params)]
