"""``sessionguard token``: print a signed access token, as a platform backend would mint it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from monitor.tokens import ROLES, SECRET_ENV, mint, parse_duration, short_secret
from signals.consent import Consent
from signals.errors import ConfigError, InvalidSignal

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token", help="print a signed access token",
        description=f"Print a signed access token (JWT, HS256, secret from {SECRET_ENV}).")
    parser.add_argument("--session", required=True, help="session id (the sid claim)")
    parser.add_argument("--participant", required=True, help="participant id (the sub claim)")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--ttl", default=7200, type=_ttl,
                        help="lifetime: 30s, 15m, 2h, 1d or seconds (default 2h)")
    parser.add_argument("--consent", default=None, type=_consent,
                        help='consent claim as JSON, e.g. \'{"monitoring": ["device"], '
                             '"recording": "prohibited"}\'')
    parser.add_argument("--secret", default=None,
                        help=f"signing secret (default: the {SECRET_ENV} environment variable)")
    parser.set_defaults(func=run)


def _ttl(value: str) -> int:
    """``--ttl``: a bad lifetime is a usage error (exit 2)."""
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _consent(value: str) -> Consent:
    """``--consent``: JSON that is not a consent claim is a usage error (exit 2)."""
    try:
        return Consent.parse(value)
    except InvalidSignal as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get(SECRET_ENV, "")
    token = mint(secret, args.session, args.participant, args.role, args.ttl, args.consent)
    weak = short_secret(secret)
    if weak is not None:
        print(f"sessionguard token: warning: {weak}", file=sys.stderr)
    print(token)
    return 0
