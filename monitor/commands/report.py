"""``sessionguard report``: the post-session integrity report, or the rule tuning view.

``report SESSION_ID [--format html|json] [--db PATH | --config FILE] [--out FILE]`` writes one
session's report (self-contained HTML by default) to stdout or ``--out``.
``report --rules [--days N]`` prints, per rule, the alerts of the last N days (default 30) and
how clinicians responded, noisiest first; with ``--format json`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from monitor.commands import argtypes, describe
from monitor.commands.audit import DB_ENV, open_existing
from monitor.report import build_report, render_html, render_json, tuning

__all__ = ["format_tuning", "register"]

_DAY_MS = 24 * 3600 * 1000


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report", help="the post-session integrity report, or --rules for rule tuning",
        description=describe(__doc__))
    parser.add_argument("session", nargs="?", metavar="SESSION_ID", help="session id")
    parser.add_argument("--rules", action="store_true",
                        help="per-rule alert, acknowledgement and false-alarm counts")
    parser.add_argument("--days", type=argtypes.days(0, above=True), default=None,
                        help="with --rules: the period, in days up to now (default 30)")
    parser.add_argument("--format", choices=("html", "json", "text"), default=None,
                        help="html (default for a session), json, or text (default for --rules)")
    parser.add_argument("--db", help=f"the audit database (default: store.db of the config, "
                                     f"or ${DB_ENV})")
    parser.add_argument("--config", help="the sidecar configuration file whose store.db to read")
    parser.add_argument("--out", help="write to this file instead of stdout")
    parser.set_defaults(func=_run, _parser=parser)


def format_tuning(rows: list[dict[str, Any]], days: float) -> str:
    """The tuning rows as a plain-text table."""
    if not rows:
        return f"No alerts in the last {days:g} days.\n"
    headers = ("rule", "alerts", "sessions", "acked", "confirmed", "false alarm", "muted",
               "unreviewed", "false-alarm rate")
    table = [headers] + [(
        r["rule"], str(r["alerts"]), str(r["sessions"]), str(r["acknowledged"]),
        str(r["confirmed"]), str(r["false_positive"]), str(r.get("muted", 0)),
        str(r["unreviewed"]),
        "—" if r["false_positive_rate"] is None else f"{r['false_positive_rate'] * 100:.0f} %",
    ) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = [f"Alerts per rule, last {days:g} days (noisiest first):"]
    for row in table:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines) + "\n"


def _run(args: argparse.Namespace) -> int:
    if args.rules == bool(args.session):
        args._parser.error("give either SESSION_ID or --rules")
    # an option the chosen report does not use is a usage error, not silently ignored
    if args.rules and args.format == "html":
        args._parser.error("--format html is for a session's report; --rules gives text or json")
    if not args.rules and args.format == "text":
        args._parser.error("--format text is for --rules; use html or json")
    if not args.rules and args.days is not None:
        args._parser.error("--days is for --rules (a session's report covers the session)")
    days = 30.0 if args.days is None else args.days
    with open_existing(args) as store:  # --db, else serve's store.db
        if args.rules:
            now = time.time_ns() // 1_000_000
            rows = tuning(store, now - int(days * _DAY_MS), now + 1)
            text = (json.dumps(rows, indent=2) + "\n" if args.format == "json"
                    else format_tuning(rows, days))
        else:
            report = build_report(store, args.session)
            text = render_json(report) if args.format == "json" else render_html(report)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
