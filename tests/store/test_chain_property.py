"""Property: whatever the ledger holds, any single tampering is caught at the right entry."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.store import KINDS, SqliteStore

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6)
_entries = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**41),
                              st.dictionaries(st.text(max_size=5), _json, max_size=3)),
                    min_size=2, max_size=12)


@settings(max_examples=25, deadline=None)
@given(entries=_entries, data=st.data())
def test_any_single_tampering_is_detected(entries: list[tuple[str, int, dict[str, object]]],
                                          data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.db"
        with SqliteStore(path, synchronous="NORMAL") as store:
            for kind, at, body in entries:
                store.append("s", kind, at, body)
            assert store.verify("s").ok
        n = len(entries)
        victim = data.draw(st.integers(0, n - 1), label="victim")
        attack = data.draw(st.sampled_from(["edit", "delete", "swap", "time"]), label="attack")
        db = sqlite3.connect(path)
        with db:
            if attack == "edit":
                body = json.loads(db.execute("SELECT body FROM entries WHERE idx = ?",
                                             (victim,)).fetchone()[0])
                body["__tampered__"] = True
                db.execute("UPDATE entries SET body = ? WHERE idx = ?",
                           (json.dumps(body), victim))
            elif attack == "time":
                db.execute("UPDATE entries SET at = at + 1 WHERE idx = ?", (victim,))
            elif attack == "delete":
                db.execute("DELETE FROM entries WHERE idx = ?", (victim,))
            else:
                other = (victim + 1) % n
                db.execute("UPDATE entries SET idx = -1 WHERE idx = ?", (victim,))
                db.execute("UPDATE entries SET idx = ? WHERE idx = ?", (victim, other))
                db.execute("UPDATE entries SET idx = ? WHERE idx = -1", (other,))
        db.close()
        with SqliteStore(path) as store:
            result = store.verify("s")
        assert not result.ok
        first = min(victim, (victim + 1) % n) if attack == "swap" else victim
        assert result.first_bad_index == first, result
