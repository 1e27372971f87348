"""Batched writes (``append_many``, ``write_many``): the same ledger as one write at a time.

The writer thread commits each run of appends and alerts through ``write_many``; anything it
stores differently from ``append``/``append_alert`` one by one would break chains or reissue
alert seqs, so these compare every stored row, not only ``verify``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from monitor.store import AlertItem, AppendItem, SqliteStore
from signals.errors import StorageError
from tests.store.conftest import alert

Item = AppendItem | AlertItem

# Sessions and bodies with what JSON escapes differently: quotes, backslashes, control
# characters, non-ASCII (stored as is), a lone surrogate-free astral character.
#: the stores' clock: what outbox rows are dated with (an alert's own at may be far off)
CLOCK = 1_700_000_000_000
AWKWARD = ['s"1', "s\\2", "s\n\t\x00\x1f3", "séance-✓-𝄞", "s 5 ' <>&"]


def _one_by_one(store: SqliteStore, items: Sequence[Item]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if len(item) == 4:
            out.append(store.append(*item))
        else:
            out.append(store.append_alert(*item))
    return out


def _rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every stored row of the three tables, in a stable order."""
    db = sqlite3.connect(path)
    try:
        return {
            "entries": db.execute("SELECT * FROM entries ORDER BY session, idx").fetchall(),
            "sessions": db.execute("SELECT * FROM sessions ORDER BY session").fetchall(),
            "outbox": db.execute("SELECT * FROM outbox ORDER BY id").fetchall(),
        }
    finally:
        db.close()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def _model(items: Sequence[Item]) -> dict[str, list[tuple[Any, ...]]]:
    """The rows ``items`` written in order to an empty store must leave, derived from the
    documented format alone (not from the store's code): chained entries, each session's
    head (count, last hash, next seq, first and greatest at), an outbox row per webhook."""
    entries: list[tuple[Any, ...]] = []
    outbox: list[tuple[Any, ...]] = []
    heads: dict[str, list[Any]] = {}  # count, head hash, next seq, first at, last at
    for item in items:
        session = item[0]
        seq: int | None = None
        urls: Sequence[str] = ()
        if len(item) == 4:
            _, kind, at, body = item
            head = heads.setdefault(session, [0, "0" * 64, 1, at, at])
        else:
            _, wire, urls = item
            kind, at = "alert", wire["at"]
            head = heads.setdefault(session, [0, "0" * 64, 1, at, at])
            seq = head[2]
            head[2] += 1
            body = {**wire, "seq": seq}
        text = _canonical({"session": session, "index": head[0], "kind": kind, "at": at,
                           "body": body, "prev_hash": head[1]})
        digest = hashlib.sha256(text.encode()).hexdigest()
        entries.append((session, head[0], kind, at, _canonical(body), head[1], digest, seq))
        # queued at the store's clock (CLOCK), not at the alert's at
        outbox += [(len(outbox) + n + 1, session, seq, url, _canonical(body), 0, CLOCK, CLOCK,
                    None, None, None, None) for n, url in enumerate(urls)]
        head[0], head[1], head[4] = head[0] + 1, digest, max(head[4], at)
    return {"entries": sorted(entries, key=lambda e: (e[0], e[1])),
            "sessions": sorted((s, *head) for s, head in heads.items()),
            "outbox": outbox}


def _mixed_items() -> list[Item]:
    """Several sessions interleaved, one repeated many times, times going backwards (last_at
    is the greatest, not the last), alerts in the middle with and without webhooks."""
    items: list[Item] = []
    for i in range(30):
        session = AWKWARD[i % len(AWKWARD)] if i % 3 else "busy"
        at = 10_000 - 37 * i if i % 2 else 10_000 + i
        items.append((session, "signal", at, {"i": i, "text": f"é \"{i}\" \\ \n"}))
        if i % 7 == 3:
            items.append((session, alert(at + 1, rule=f"r{i}"), ("http://h/a", "http://h/b")))
        if i % 11 == 5:
            items.append(("busy", alert(at + 2), ()))
    return items


def test_write_many_stores_exactly_what_one_by_one_does(tmp_path: Path) -> None:
    warm: list[Item] = [("busy", "signal", 5, {"warm": True}), ("busy", alert(6), ())]
    items = _mixed_items()
    with SqliteStore(tmp_path / "one.db", clock=lambda: CLOCK) as one, \
            SqliteStore(tmp_path / "many.db", clock=lambda: CLOCK) as many:
        # existing chains (heads cached) and new ones
        _one_by_one(one, warm)
        _one_by_one(many, warm)
        expected = _one_by_one(one, items)
        got = many.write_many(items[:17]) + many.write_many(items[17:])
        assert got == expected
        sessions = one.sessions()
        assert many.sessions() == sessions and len(sessions) == len(AWKWARD) + 1
        for session in sessions:
            assert many.entries(session) == one.entries(session)
            assert many.verify(session) == one.verify(session)
            assert many.verify(session).ok
    assert _rows(tmp_path / "many.db") == _rows(tmp_path / "one.db") == _model(warm + items)


def test_append_many_returns_the_entries_append_would(tmp_path: Path) -> None:
    items: list[AppendItem] = [(AWKWARD[i % 3], "signal", 100 - i, {"i": i}) for i in range(9)]
    with SqliteStore(tmp_path / "one.db") as one, SqliteStore(tmp_path / "many.db") as many:
        expected = [one.append(*item) for item in items]
        assert many.append_many(iter(items)) == expected
        assert many.append_many([]) == []
    assert _rows(tmp_path / "many.db") == _rows(tmp_path / "one.db") == _model(items)


def test_hashes_follow_the_documented_formula_for_awkward_strings(store: SqliteStore) -> None:
    """The chain hash is sha256 over the canonical JSON of the entry without its hash,
    recomputed here independently of ``entry_hash``, for sessions and bodies JSON escapes."""
    items: list[Item] = [(s, "signal", 7, {"k\"\\\n": s, "v": [s, 1.5, None]}) for s in AWKWARD]
    items += [(s, alert(8, rule=s), ()) for s in AWKWARD]
    store.write_many(items)
    for session in AWKWARD:
        entries = store.entries(session)
        assert [e["kind"] for e in entries] == ["signal", "alert"]
        for entry in entries:
            fields = {k: v for k, v in entry.items() if k != "hash"}
            text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            assert entry["hash"] == hashlib.sha256(text.encode()).hexdigest()
        assert store.verify(session).ok


def test_a_bad_append_fails_the_whole_batch_before_anything_is_written(
        store: SqliteStore, db_path: Path) -> None:
    store.append("s1", "signal", 1, {"n": 1})
    before = _rows(db_path)
    bad_items: list[list[Item]] = [
        [("s1", "signal", 2, {"n": 2}), ("s2", "nonsense", 3, {})],
        [("s1", "signal", 2, {"n": 2}), ("s2", "signal", 3, {"not json": {1, 2}})],
        [("s1", "signal", 2, {"n": 2}), ("s2", "signal", True, {})],
        [("s1", "signal", 2, {"n": 2}), ("s2", {"type": "alert"}, ())],  # alert without at
    ]
    for items in bad_items:
        with pytest.raises(StorageError):
            store.write_many(items)
        assert _rows(db_path) == before
    assert store.append("s1", "signal", 4, {"n": 4})["index"] == 1
    assert store.verify("s1").ok


def test_an_alert_that_is_not_json_fails_the_batch_and_leaves_the_heads_right(
        store: SqliteStore, db_path: Path) -> None:
    """An alert's body is encoded with its seq inside the transaction: failing there must
    roll back the batch and leave no head of it cached."""
    store.write_many([("s1", "signal", 1, {"n": 1}), ("s1", alert(2), ())])
    before = _rows(db_path)
    with pytest.raises(StorageError, match="not plain JSON"):
        store.write_many([("s1", "signal", 3, {"n": 3}), ("s2", "signal", 3, {"n": 3}),
                          ("s1", alert(4, extra={1, 2}), ())])
    assert _rows(db_path) == before
    assert store.write_many([("s1", "signal", 5, {"n": 5}), ("s1", alert(6), ())]) == [
        store.entries("s1")[2], 2]
    assert store.verify("s1").ok and store.last_seq("s1") == 2


def test_later_writes_in_the_same_transaction_read_the_batch_heads(store: SqliteStore) -> None:
    """Heads are written once per session at the end of a batch; whatever runs after it in
    the same transaction, even with no cached head (read from ``sessions``), continues the
    chain and the alert seqs."""
    with store.transaction() as db:
        store.write_many([("s1", "signal", 1, {}), ("s2", "signal", 1, {}),
                          ("s1", alert(2), ()), ("s1", "signal", 3, {})])
        assert db.execute("SELECT count, next_seq FROM sessions WHERE session = 's1'"
                          ).fetchone() == (3, 2)
        store.forget_heads()
        assert store.append("s1", "status", 4, {})["index"] == 3
        store.forget_heads()
        assert store.append_alert("s1", alert(5)) == 2
        store.forget_heads()
        assert store.write_many([("s2", alert(6), ()), ("s1", "signal", 7, {})]) == [
            1, store.entries("s1")[5]]
    assert [e["index"] for e in store.entries("s1")] == list(range(6))
    assert store.verify("s1").ok and store.verify("s2").ok
    assert (store.last_seq("s1"), store.last_seq("s2")) == (2, 1)


def test_evicted_heads_are_read_again_within_and_after_a_batch(
        store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch with more sessions than the head cache holds: the heads it evicts are read
    back from ``sessions``, current, by the next batch."""
    monkeypatch.setattr("monitor.store._HEAD_CACHE", 2)
    store.write_many([(s, "signal", 1, {"n": 1}) for s in "abcd"] + [("a", alert(2), ())])
    assert list(store._heads) == ["d", "a"]
    got = store.write_many([(s, "signal", 3, {"n": 3}) for s in "bcab"] + [("c", alert(4), ())])
    assert [e["index"] if isinstance(e, dict) else e for e in got] == [1, 1, 2, 2, 1]
    assert list(store._heads) == ["b", "c"]
    assert [len(store.entries(s)) for s in "abcd"] == [3, 3, 3, 1]
    assert all(store.verify(s).ok for s in "abcd")
    assert (store.last_seq("a"), store.last_seq("c")) == (1, 1)
    # a cached head written again becomes the most recent: "c" is evicted, not "b"
    store.write_many([("b", "signal", 5, {}), ("d", "signal", 5, {})])
    assert list(store._heads) == ["b", "d"]


def test_heads_follow_another_connection_between_batches(db_path: Path) -> None:
    with SqliteStore(db_path) as first, SqliteStore(db_path) as second:
        first.write_many([("s1", "signal", 1, {}), ("s1", alert(2), ())])
        second.append_alert("s1", alert(3))  # first's cached head and seq are now stale
        assert first.write_many([("s1", alert(4), ()), ("s1", "signal", 5, {})]) == [
            3, first.entries("s1")[4]]
        assert first.verify("s1").ok and first.last_seq("s1") == 3
