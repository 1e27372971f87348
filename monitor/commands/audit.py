"""``sessionguard audit``: check and prune the audit store.

``audit verify SESSION`` walks the session's hash chain (exit 0 when it holds, 1 naming the
first bad entry); ``audit verify --all`` checks every session; ``audit purge [--days N]``
deletes sessions older than the retention (default: the configured ``retention_days``, 30);
``audit sessions`` lists them.

The database is ``--db PATH`` if given, else the ``store.db`` of the configuration that
``serve`` reads (``--config FILE``, the embedded default, and ``SESSIONGUARD_DB``), so the
command looks where the server writes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from monitor.commands import argtypes, describe
from monitor.store import DEFAULT_DB_PATH, DEFAULT_RETENTION_MS, SqliteStore
from signals.errors import StorageError

__all__ = ["DB_ENV", "db_path", "open_existing", "register"]

DB_ENV = "SESSIONGUARD_DB"
_DAY_MS = 24 * 3600 * 1000


def _config(args: argparse.Namespace) -> Any:
    try:
        from monitor.config import load_config
    except ImportError:  # pragma: no cover - the config module ships with the server
        return None
    return load_config(getattr(args, "config", None))


def db_path(args: argparse.Namespace) -> Path:
    """``--db`` if given, else the configured ``store.db`` (``--config``, ``SESSIONGUARD_DB``),
    else ``$SESSIONGUARD_DB`` or ``./var/sessionguard.db``."""
    if args.db:
        return Path(args.db)
    config = _config(args)
    if config is not None:
        return Path(config.store.db)
    return Path(os.environ.get(DB_ENV) or DEFAULT_DB_PATH)


def open_existing(args: argparse.Namespace) -> SqliteStore:
    """The audit store the command names (``db_path``), which must exist and be one: a
    mistyped ``--db`` naming another program's database is refused, not given our tables."""
    path = db_path(args)
    if not path.is_file():
        raise StorageError(f"no audit store at {str(path)!r} (pass --db PATH)")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro",
                                                uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise StorageError(f"{str(path)!r} is not a readable SQLite database ({exc})") from None
    if not {"entries", "sessions"} <= tables:
        raise StorageError(f"{str(path)!r} is not a sessionguard audit store (it has no "
                           "entries table); pass the --db that serve writes")
    return SqliteStore(path)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("audit", help="verify or purge the audit store",
                                   description=describe(__doc__))
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION",
                                parser_class=type(parser))
    sub.required = True
    db_help = f"the audit database (default: store.db of the config, or ${DB_ENV})"
    config_help = "the sidecar configuration file whose store.db and retention_days to use"

    verify = sub.add_parser("verify", help="check a session's hash chain")
    verify.add_argument("session", nargs="?", help="session id")
    verify.add_argument("--all", action="store_true", help="check every session")
    verify.add_argument("--db", help=db_help)
    verify.add_argument("--config", help=config_help)
    verify.set_defaults(func=_verify, _parser=verify)

    purge = sub.add_parser("purge", help="delete sessions older than the retention")
    purge.add_argument("--days", type=argtypes.days(1), default=None,
                       help="retention in days, at least 1 so a session still running is never "
                            "purged (default: the configured retention_days, 30)")
    purge.add_argument("--db", help=db_help)
    purge.add_argument("--config", help=config_help)
    purge.set_defaults(func=_purge)

    sessions = sub.add_parser("sessions", help="list the sessions in the store")
    sessions.add_argument("--db", help=db_help)
    sessions.add_argument("--config", help=config_help)
    sessions.set_defaults(func=_sessions)


def _verify(args: argparse.Namespace) -> int:
    if bool(args.session) == bool(args.all):
        args._parser.error("give one SESSION or --all")
    with open_existing(args) as store:
        names = store.sessions() if args.all else [args.session]
        bad = 0
        for name in names:
            try:
                result = store.verify(name)
            except StorageError as exc:  # e.g. no such session: say so, check the others
                bad += 1
                print(f"session {name}: {exc}", file=sys.stderr)
                continue
            if result.ok:
                print(f"session {name}: chain holds ({result.checked} entries)")
            else:
                bad += 1
                print(f"session {name}: chain BROKEN at entry {result.first_bad_index}: "
                      f"{result.problem}", file=sys.stderr)
    return 1 if bad else 0


def _purge(args: argparse.Namespace) -> int:
    days = args.days
    if days is None:
        config = _config(args)
        days = (config.store.retention_days if config is not None
                else DEFAULT_RETENTION_MS / _DAY_MS)
    with open_existing(args) as store:
        gone = store.purge(int(days * _DAY_MS))
    print(f"purged {len(gone)} session(s) older than {days:g} days")
    return 0


def _sessions(args: argparse.Namespace) -> int:
    with open_existing(args) as store:
        for name in store.sessions():
            print(name)
    return 0
