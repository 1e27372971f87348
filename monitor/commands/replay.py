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
from collections.abc import Iterable, Iterator
from typing import Any

from rules import load_rules
from rules.replay import replay
from signals.consent import Consent
from signals.errors import ConfigError
from signals.yaml_errors import not_utf8

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


def _decoded(lines: Iterable[bytes], name: str) -> Iterator[str]:
    """The lines as text; a line that is not UTF-8 stops the replay naming the file."""
    for n, raw in enumerate(lines, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{not_utf8(name, exc)} on line {n}") from None


def run(args: argparse.Namespace) -> int:
    consent = Consent.parse(args.consent) if args.consent is not None else None
    ruleset = load_rules(args.rules)
    if args.events == "-":
        for msg in replay(_decoded(sys.stdin.buffer, "standard input"), ruleset, consent):
            print(json.dumps(msg, ensure_ascii=False), flush=False)
        return 0
    with open(args.events, "rb") as fh:
        for msg in replay(_decoded(fh, args.events), ruleset, consent):
            print(json.dumps(msg, ensure_ascii=False))
    return 0
