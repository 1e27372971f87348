"""Alert sequence numbers, resume, retention and the webhook outbox (sync API)."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.store import DEFAULT_RETENTION_MS, SqliteStore
from signals.errors import StorageError
from tests.store.conftest import alert

DAY = 24 * 3600 * 1000


def test_seq_counts_per_session(store: SqliteStore) -> None:
    assert [store.append_alert("s1", alert(100 + i)) for i in range(3)] == [1, 2, 3]
    assert store.append_alert("s2", alert(200)) == 1
    store.append("s1", "signal", 150, {"signal": "client.focus"})
    assert store.append_alert("s1", alert(300)) == 4
    assert store.last_seq("s1") == 4 and store.last_seq("s2") == 1 and store.last_seq("x") == 0


def test_alerts_after_returns_wire_dicts_with_seq(store: SqliteStore) -> None:
    sent = [alert(100 + i, rule=f"r{i}") for i in range(5)]
    for a in sent:
        store.append_alert("s1", a)
    missed = store.alerts_after("s1", 2)
    assert [a["seq"] for a in missed] == [3, 4, 5]
    assert missed[0] == {**sent[2], "seq": 3}
    assert store.alerts_after("s1", 5) == [] and store.alerts_after("other", 0) == []
    entry = next(e for e in store.entries("s1") if e["kind"] == "alert")
    assert entry["body"]["seq"] == 1 and entry["at"] == 100


def test_resume_after_reopening(db_path: Path) -> None:
    with SqliteStore(db_path) as first:
        for i in range(4):
            first.append_alert("s1", alert(100 + i))
    with SqliteStore(db_path) as second:
        assert [a["seq"] for a in second.alerts_after("s1", 1)] == [2, 3, 4]
        assert second.append_alert("s1", alert(500)) == 5
        assert second.verify("s1").ok


def test_bad_alerts_are_refused_and_leave_no_trace(store: SqliteStore) -> None:
    with pytest.raises(StorageError, match="at"):
        store.append_alert("s1", {"type": "alert", "id": "x"})
    with pytest.raises(StorageError, match="JSON"):
        store.append_alert("s1", {"type": "alert", "at": 1, "x": {1, 2}})
    assert store.sessions() == []
    assert store.append_alert("s1", alert(1)) == 1


def test_append_alert_queues_webhooks_atomically(db_path: Path) -> None:
    store = SqliteStore(db_path, clock=lambda: 1000)
    seq = store.append_alert("s1", alert(1000), ["http://a.example/hook", "https://b.example/x"])
    items = store.due(1000)
    assert [(i.url, i.seq, i.attempts) for i in items] == [
        ("http://a.example/hook", seq, 0), ("https://b.example/x", seq, 0)]
    assert '"seq":1' in items[0].body
    assert store.due(999) == []
    assert store.due(1000, urls=["https://b.example/x"])[0].url == "https://b.example/x"
    assert store.due(1000, urls=[]) == []
    assert store.pending() == 2
    store.close()


@pytest.mark.parametrize("skew_ms", [60_000, -60_000, 300_000])
def test_outbox_rows_are_dated_by_the_store_clock_not_the_alert(db_path: Path,
                                                                skew_ms: int) -> None:
    """The alert's ``at`` comes from the patient's clock (up to clock_skew_ms off): the
    first attempt and the give-up time count from the sidecar's own clock."""
    now = 1_700_000_000_000
    with SqliteStore(db_path, clock=lambda: now) as store:
        store.append_alert("s1", alert(now + skew_ms), ["http://a.example/hook"])
        store.write_many([("s1", alert(now + skew_ms + 1), ["http://a.example/hook"])])
        assert [(i.next_at, i.created_at) for i in store.due(now)] == [(now, now)] * 2
        assert store.entries("s1")[0]["at"] == now + skew_ms  # the ledger keeps the alert's


def test_outbox_reschedule_and_delivery(db_path: Path) -> None:
    store = SqliteStore(db_path, clock=lambda: 1000)
    store.append_alert("s1", alert(1000), ["http://user:pw@hooks.example:8080/secret/path?k=v"])
    item = store.due(1000)[0]
    assert store.reschedule(item.id, 5000, "HTTP 503", 503) == 1
    assert store.due(4999) == [] and store.next_due_at() == 5000
    again = store.due(5000)[0]
    assert again.attempts == 1
    store.mark_delivered(again.id, 5100, 204)
    store.mark_delivered(again.id, 5200, 204)  # a second report changes nothing
    assert store.due(10**12) == [] and store.pending() == 0 and store.next_due_at() is None
    row = store.outbox("s1")[0]
    assert (row["attempts"], row["delivered_at"], row["last_status"]) == (2, 5100, 204)
    deliveries = [e for e in store.entries("s1") if e["kind"] == "delivery"]
    assert len(deliveries) == 1
    assert deliveries[0]["body"] == {"channel": "webhook", "target": "http://hooks.example:8080",
                                     "seq": 1, "status": 204, "attempts": 2}
    assert store.verify("s1").ok
    store.close()


def test_enqueue_outside_an_alert(store: SqliteStore) -> None:
    item_id = store.enqueue("s1", "http://h/x", {"type": "alert", "seq": 9, "at": 5}, now=7)
    (item,) = store.due(7)
    assert (item.id, item.seq, item.session, item.created_at) == (item_id, 9, "s1", 7)


def test_purge_deletes_whole_old_sessions(store: SqliteStore) -> None:
    now = 100 * DAY
    store.append("old", "signal", now - 40 * DAY, {})
    store.append_alert("old", alert(now - 35 * DAY), ["http://h/x"])
    store.append("recent", "signal", now - 40 * DAY, {})
    store.append("recent", "signal", now - 1 * DAY, {})  # still active: kept whole
    store.append("new", "signal", now, {})
    assert store.purge(now=now) == ["old"]
    assert store.sessions() == ["recent", "new"]
    assert store.entries("old") == [] and store.outbox("old") == []
    assert store.verify("recent").ok and store.verify("recent").checked == 2
    assert store.purge(DEFAULT_RETENTION_MS, now=now) == []
    assert store.purge(0, now=now + 1) == ["recent", "new"]
    # a purged session starts again from scratch
    assert store.append_alert("old", alert(now)) == 1
    with pytest.raises(StorageError):
        store.purge(-1)
