from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.store import SqliteStore


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "audit.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db_path) as s:
        yield s


def alert(at: int, rule: str = "screen-capture", **extra: object) -> dict[str, object]:
    """An alert wire dict without ``seq``, as the server hands it to the store."""
    return {"type": "alert", "id": f"{rule}-{at}", "session": "s1", "participant": "p1",
            "rule": rule, "severity": "critical", "title": "t", "message": "m",
            "suggested_response": ["ask"], "evidence": [{"signal": "client.display_capture",
                                                         "at": at, "data": {}}],
            "at": at, **extra}
