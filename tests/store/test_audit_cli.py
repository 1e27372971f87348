"""``sessionguard audit verify|purge|sessions`` against a real database."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.store import SqliteStore

DAY = 24 * 3600 * 1000


def _make(db: Path) -> None:
    now = time.time_ns() // 1_000_000
    with SqliteStore(db) as store:
        for i in range(4):
            store.append("live", "signal", now - 1000 + i, {"i": i})
        store.append("ancient", "signal", now - 60 * DAY, {})


def test_verify_ok(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make(db_path)
    assert main(["audit", "verify", "live", "--db", str(db_path)]) == 0
    assert "chain holds (4 entries)" in capsys.readouterr().out


def test_verify_names_the_first_bad_entry(db_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _make(db_path)
    db = sqlite3.connect(db_path)
    with db:
        db.execute("UPDATE entries SET body = '{\"i\":99}' WHERE session = 'live' AND idx = 2")
    db.close()
    assert main(["audit", "verify", "live", "--db", str(db_path)]) == 1
    err = capsys.readouterr().err
    assert "BROKEN at entry 2" in err and "Traceback" not in err
    assert main(["audit", "verify", "--all", "--db", str(db_path)]) == 1
    captured = capsys.readouterr()
    assert "ancient: chain holds" in captured.out and "live: chain BROKEN" in captured.err


def test_verify_errors(db_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["audit", "verify", "x", "--db", str(tmp_path / "none.db")]) == 1
    assert "no audit store" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    _make(db_path)
    assert main(["audit", "verify", "nope", "--db", str(db_path)]) == 1
    assert "no session 'nope'" in capsys.readouterr().err
    for usage in (["audit", "verify", "--db", str(db_path)],
                  ["audit", "verify", "live", "--all", "--db", str(db_path)]):
        with pytest.raises(SystemExit) as exit_info:  # a usage error: exit 2
            main(usage)
        assert exit_info.value.code == 2
        assert "SESSION or --all" in capsys.readouterr().err
    monkeypatch.setenv("SESSIONGUARD_DB", str(db_path))
    assert main(["audit", "verify", "live"]) == 0


def test_default_path_comes_from_the_server_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SESSIONGUARD_DB", raising=False)
    monkeypatch.delenv("SESSIONGUARD_RETENTION_DAYS", raising=False)
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "sg.yaml"
    config.write_text("store:\n  db: data/audit.db\n  retention_days: 100\n")
    _make(tmp_path / "data" / "audit.db")
    assert main(["audit", "sessions", "--config", str(config)]) == 0
    assert capsys.readouterr().out.split() == ["ancient", "live"]
    assert main(["audit", "purge", "--config", str(config)]) == 0  # 60-day-old one is kept
    assert "purged 0 session(s) older than 100 days" in capsys.readouterr().out
    assert main(["audit", "sessions"]) == 1  # the embedded config points elsewhere
    assert "no audit store" in capsys.readouterr().err


def test_purge(db_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _make(db_path)
    assert main(["audit", "purge", "--db", str(db_path)]) == 0
    assert "purged 1 session(s) older than 30 days" in capsys.readouterr().out
    with SqliteStore(db_path) as store:
        assert store.sessions() == ["live"]
    # less than a day would purge sessions still running; nan and inf are no retention
    for days in ("0", "0.5", "-1", "nan", "inf", "1e300", "soon"):
        with pytest.raises(SystemExit) as exit_info:
            main(["audit", "purge", "--days", days, "--db", str(db_path)])
        assert exit_info.value.code == 2
        assert "argument --days:" in capsys.readouterr().err
    with SqliteStore(db_path) as store:
        assert store.sessions() == ["live"]


def test_verify_all_reports_odd_values_and_goes_on(db_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _make(db_path)
    with SqliteStore(db_path) as store:
        store.append("later", "signal", time.time_ns() // 1_000_000, {})
    db = sqlite3.connect(db_path)
    with db:  # values no write stores: text count, infinite time, a body too deep to read
        db.execute("UPDATE sessions SET count = 'x' WHERE session = 'ancient'")
        db.execute("UPDATE entries SET at = 9e999 WHERE session = 'live' AND idx = 1")
    db.close()
    assert main(["audit", "verify", "--all", "--db", str(db_path)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "ancient: chain BROKEN at entry 1" in captured.err
    assert "live: chain BROKEN at entry 1" in captured.err
    assert "later: chain holds (1 entries)" in captured.out


@pytest.mark.parametrize("command", [["audit", "sessions"], ["audit", "verify", "--all"],
                                     ["report", "--rules"], ["report", "s1"]])
def test_a_database_that_is_not_an_audit_store_is_refused_untouched(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    """A mistyped --db naming another program's database: one sentence, exit 1, and the
    database is not given the audit store's tables."""
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE foo (x)")
    db.close()
    assert main([*command, "--db", str(other)]) == 1
    assert "is not a sessionguard audit store" in capsys.readouterr().err
    with sqlite3.connect(other) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()
    assert tables == {"foo"}


def test_debug_is_accepted_after_the_command_too(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """``--debug`` shows the traceback (the error is raised), before or after the command."""
    from signals.errors import StorageError

    missing = str(tmp_path / "none.db")
    for argv in (["--debug", "report", "s1", "--db", missing],
                 ["report", "s1", "--db", missing, "--debug"],
                 ["audit", "verify", "s1", "--db", missing, "--debug"]):
        with pytest.raises(StorageError):
            main(argv)
    assert main(["report", "s1", "--db", missing]) == 1  # without it: one sentence
    assert "no audit store at" in capsys.readouterr().err
