"""The hash chain: what is stored, and that edits, deletions and reordering are caught."""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from pathlib import Path

import pytest

from monitor.store import GENESIS_HASH, KINDS, SqliteStore
from signals.errors import StorageError


def _fill(store: SqliteStore, session: str = "s1", n: int = 6) -> None:
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        store.append(session, kind, 1000 + i, {"i": i, "text": "é ✓", "nested": {"b": 1, "a": [i]}})


def _sql(path: Path, statement: str, params: tuple[object, ...] = ()) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(statement, params)
    db.close()


def test_entries_are_chained_with_the_documented_hash(store: SqliteStore) -> None:
    _fill(store)
    entries = store.entries("s1")
    assert [e["index"] for e in entries] == list(range(6))
    assert entries[0]["prev_hash"] == GENESIS_HASH
    for prev, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == prev["hash"]
    for entry in entries:
        # Independent recomputation: sha256 over the canonical JSON of the entry sans hash.
        fields = {k: v for k, v in entry.items() if k != "hash"}
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert entry["hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert entries[2]["body"] == {"i": 2, "text": "é ✓", "nested": {"b": 1, "a": [2]}}
    result = store.verify("s1")
    assert (result.ok, result.checked, result.first_bad_index) == (True, 6, None)


def test_sessions_have_independent_chains(store: SqliteStore) -> None:
    _fill(store, "s1", 3)
    _fill(store, "s2", 2)
    store.append("s1", "status", 2000, {"blind": True})
    assert store.sessions() == ["s1", "s2"]
    assert [e["index"] for e in store.entries("s2")] == [0, 1]
    assert store.entries("s2")[0]["prev_hash"] == GENESIS_HASH
    assert store.verify("s1").checked == 4 and store.verify("s2").ok
    # only some kinds, in chain order (what an acknowledgement reads back)
    assert [(e["index"], e["kind"]) for e in store.entries("s1", ("status",))] == [(3, "status")]
    assert store.entries("s1", ()) == []
    assert [e["index"] for e in store.entries("s1", ["status", "signal"])] == [0, 3]


def test_edited_body_is_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    _sql(db_path, "UPDATE entries SET body = ? WHERE session = 's1' AND idx = 3",
         (json.dumps({"i": 3, "text": "harmless"}),))
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 3
    assert "altered" in (result.problem or "")


def test_edited_time_or_kind_is_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    _sql(db_path, "UPDATE entries SET at = at + 1 WHERE session = 's1' AND idx = 1")
    assert store.verify("s1").first_bad_index == 1
    _sql(db_path, "UPDATE entries SET at = at - 1 WHERE session = 's1' AND idx = 1")
    assert store.verify("s1").ok
    _sql(db_path, "UPDATE entries SET kind = 'skip' WHERE session = 's1' AND idx = 4")
    assert store.verify("s1").first_bad_index == 4


def test_rehashed_edit_is_still_detected_by_the_next_entry(
        store: SqliteStore, db_path: Path) -> None:
    from monitor.store import canonical_json, entry_hash

    _fill(store)
    e = store.entries("s1")[2]
    body = canonical_json({"forged": True})
    new_hash = entry_hash("s1", 2, e["kind"], e["at"], body, e["prev_hash"])
    _sql(db_path, "UPDATE entries SET body = ?, hash = ? WHERE session = 's1' AND idx = 2",
         (body, new_hash))
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 3


def test_deleted_entry_is_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    _sql(db_path, "DELETE FROM entries WHERE session = 's1' AND idx = 2")
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 2
    assert "missing" in (result.problem or "")


def test_deleted_and_renumbered_entry_is_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    _sql(db_path, "DELETE FROM entries WHERE session = 's1' AND idx = 2")
    for idx in range(3, 6):
        _sql(db_path, "UPDATE entries SET idx = idx - 1 WHERE session = 's1' AND idx = ?", (idx,))
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 2


def test_truncated_tail_is_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    _sql(db_path, "DELETE FROM entries WHERE session = 's1' AND idx = 5")
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 5
    assert "end" in (result.problem or "")


def test_reordered_entries_are_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    _sql(db_path, "UPDATE entries SET idx = -1 WHERE session = 's1' AND idx = 1")
    _sql(db_path, "UPDATE entries SET idx = 1 WHERE session = 's1' AND idx = 2")
    _sql(db_path, "UPDATE entries SET idx = 2 WHERE session = 's1' AND idx = -1")
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 1


def test_swapped_contents_are_detected(store: SqliteStore, db_path: Path) -> None:
    _fill(store)
    a, b = store.entries("s1")[3:5]
    for target, src in ((3, b), (4, a)):
        _sql(db_path, "UPDATE entries SET kind = ?, at = ?, body = ?, prev_hash = ?, hash = ? "
                      "WHERE session = 's1' AND idx = ?",
             (src["kind"], src["at"], json.dumps(src["body"]), src["prev_hash"], src["hash"],
              target))
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == 3


def test_unknown_session_and_bad_entries_raise(store: SqliteStore) -> None:
    with pytest.raises(StorageError, match="no session"):
        store.verify("nope")
    with pytest.raises(StorageError, match="kind"):
        store.append("s1", "gossip", 1, {})
    with pytest.raises(StorageError, match="JSON"):
        store.append("s1", "signal", 1, {"x": object()})
    with pytest.raises(StorageError, match="JSON"):
        store.append("s1", "signal", 1, {"x": float("nan")})
    with pytest.raises(StorageError, match="milliseconds"):
        store.append("s1", "signal", 1.5, {})  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="append_alert"):  # its seq would not be resumable
        store.append("s1", "alert", 1, {"seq": 1})
    assert store.sessions() == []  # nothing half-written


def test_chain_continues_after_reopening(db_path: Path) -> None:
    with SqliteStore(db_path) as first:
        _fill(first, n=3)
    with SqliteStore(db_path) as second:
        entry = second.append("s1", "feedback", 5000, {"verdict": "confirmed"})
        assert entry["index"] == 3
        assert second.verify("s1").ok and second.verify("s1").checked == 4


def test_closed_store_refuses(db_path: Path) -> None:
    s = SqliteStore(db_path)
    s.close()
    with pytest.raises(StorageError, match="closed"):
        s.append("s1", "signal", 1, {})
    with pytest.raises(StorageError, match="closed"):
        s.entries("s1")


def test_unopenable_path_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="cannot open"):
        SqliteStore(blocker / "audit.db")


def test_store_runs_in_wal_with_full_sync(store: SqliteStore, db_path: Path) -> None:
    store.append("s1", "signal", 1, {})
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


# The store keeps each session's chain head in memory so an append needs no read. These
# check that the cache never outlives the database state it mirrors.

def test_chain_stays_whole_when_another_connection_appends(db_path: Path) -> None:
    with SqliteStore(db_path) as first, SqliteStore(db_path) as second:
        first.append("s1", "signal", 1, {"n": 1})
        second.append("s1", "signal", 2, {"n": 2})  # first's cached head is now stale
        entry = first.append("s1", "signal", 3, {"n": 3})
        assert entry["index"] == 2
        assert first.verify("s1").ok and first.verify("s1").checked == 3


def test_purge_then_append_starts_a_fresh_chain(store: SqliteStore) -> None:
    store.append("s1", "signal", 1000, {"n": 1})
    assert store.purge(older_than_ms=0, now=5000) == ["s1"]
    entry = store.append("s1", "signal", 6000, {"n": 2})
    assert entry["index"] == 0 and entry["prev_hash"] == GENESIS_HASH
    assert store.verify("s1").ok


def test_rolled_back_append_leaves_no_cached_head(store: SqliteStore) -> None:
    store.append("s1", "signal", 1, {"n": 1})
    with pytest.raises(ZeroDivisionError), store.transaction():
        store.append("s1", "signal", 2, {"n": 2})
        raise ZeroDivisionError
    entry = store.append("s1", "signal", 3, {"n": 3})
    assert entry["index"] == 1
    assert store.verify("s1").ok


def test_the_head_cache_is_bounded_and_evicted_heads_are_read_again(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("monitor.store._HEAD_CACHE", 2)
    for session in ("a", "b", "c"):  # "a" is the least recently written: evicted
        store.append(session, "signal", 1, {"n": 1})
    assert list(store._heads) == ["b", "c"]
    entry = store.append("a", "signal", 2, {"n": 2})
    assert entry["index"] == 1 and list(store._heads) == ["c", "a"]
    assert all(store.verify(s).ok for s in ("a", "b", "c"))


# -- verify: one snapshot, odd values, the seq column --------------------------------------

def test_verify_reads_entries_and_head_in_one_snapshot(db_path: Path) -> None:
    """Another connection (the server) commits between verify's two reads: the chain it
    read is still whole, and verify must say so."""
    with SqliteStore(db_path) as store, SqliteStore(db_path) as server:
        _fill(server, n=3)
        raw = store._db
        appended: list[int] = []

        def between_reads(sql: str) -> None:  # runs as the head record is about to be read
            if "FROM sessions" in sql and not appended:
                appended.append(server.append("s1", "signal", 5000, {"late": True})["index"])

        raw.set_trace_callback(between_reads)
        try:
            result = store.verify("s1")
        finally:
            raw.set_trace_callback(None)
        assert appended == [3]
        assert (result.ok, result.checked) == (True, 3)
        assert store.verify("s1").checked == 4


_DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("statement", "bad_index"), [
    ("UPDATE sessions SET count = 'x'", 6),
    ("UPDATE sessions SET count = 2.5", 6),
    ("UPDATE entries SET at = 9e999 WHERE idx = 2", 2),
    ("UPDATE entries SET at = at + 0.5 WHERE idx = 2", 2),
    ("UPDATE entries SET at = 'soon' WHERE idx = 2", 2),
    (f"UPDATE entries SET body = '{_DEEP}' WHERE idx = 2", 2),
    ("UPDATE entries SET body = X'ff00' WHERE idx = 2", 2),
    ("UPDATE entries SET body = 'null' WHERE idx = 2", 2),
    ("UPDATE entries SET kind = X'ff' WHERE idx = 2", 2),
    ("UPDATE entries SET hash = 5 WHERE idx = 2", 2),
    ("UPDATE entries SET prev_hash = 5 WHERE idx = 2", 2),
    ("UPDATE entries SET idx = 'one' WHERE idx = 1", 1),
    ("UPDATE sessions SET head_hash = 5", 5),
])
def test_odd_values_break_the_chain_instead_of_raising(store: SqliteStore, db_path: Path,
                                                       statement: str, bad_index: int) -> None:
    _fill(store)
    _sql(db_path, statement)
    result = store.verify("s1")
    assert not result.ok and result.first_bad_index == bad_index, result
    assert result.problem


def test_verify_checks_the_seq_column_resume_reads(store: SqliteStore, db_path: Path) -> None:
    """``entries.seq`` is outside the hash, yet ``alerts_after`` (resume) goes by it."""
    store.append("s1", "signal", 1, {"n": 1})
    store.append_alert("s1", {"type": "alert", "id": "a", "at": 2})
    store.append("s1", "signal", 3, {"n": 3})
    store.append_alert("s1", {"type": "alert", "id": "b", "at": 4})
    assert store.verify("s1").ok
    for statement, index in (("UPDATE entries SET seq = NULL WHERE idx = 1", 1),  # hidden
                             ("UPDATE entries SET seq = 7 WHERE idx = 3", 3),  # misplaced
                             ("UPDATE entries SET seq = 9 WHERE idx = 2", 2)):  # invented
        _sql(db_path, "UPDATE entries SET seq = CASE idx WHEN 1 THEN 1 WHEN 3 THEN 2 END")
        assert store.verify("s1").ok
        _sql(db_path, statement)
        result = store.verify("s1")
        assert not result.ok and result.first_bad_index == index
        assert "seq column" in (result.problem or "")
