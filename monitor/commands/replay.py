"""``sessionguard replay EVENTS.jsonl [--rules PATH] [--consent JSON]``.

Feeds recorded wire messages through the rules engine with their own timestamps and prints
each alert as one JSON line (the CONTRACT alert shape, ``seq`` counted per session). Without
``--consent`` every session starts with all three monitoring scopes granted and recording
prohibited, so every rule can run. ``-`` reads standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rules import load_rules
from rules.replay import replay
from signals.consent import Consent

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="feed recorded signals through the rules engine",
        description="Feed recorded signals (JSON lines) through the rules engine; print alerts "
                    "as JSON lines. Default consent: device, audio and video monitoring, "
                    "recording prohibited.")
    parser.add_argument("events", metavar="EVENTS.jsonl",
                        help="wire messages, one per line ('-': stdin)")
    parser.add_argument("--rules", action="append", default=None, metavar="PATH",
                        help="rule files or directories (default: the built-in rules; repeatable)")
    parser.add_argument("--consent", default=None, metavar="JSON",
                        help='starting consent, e.g. \'{"monitoring": ["device"], '
                             '"recording": "prohibited"}\'')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    consent = Consent.parse(args.consent) if args.consent is not None else None
    ruleset = load_rules(args.rules)
    if args.events == "-":
        lines = sys.stdin
        for msg in replay(lines, ruleset, consent):
            print(json.dumps(msg, ensure_ascii=False), flush=False)
        return 0
    with open(args.events, encoding="utf-8") as fh:
        for msg in replay(fh, ruleset, consent):
            print(json.dumps(msg, ensure_ascii=False))
    return 0
