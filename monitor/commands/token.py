"""``sessionguard token``: print a signed access token, as a platform backend would mint it."""

from __future__ import annotations

import argparse
import os
from typing import Any

from monitor.tokens import ROLES, SECRET_ENV, mint, parse_duration

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token", help="print a signed access token",
        description=f"Print a signed access token (JWT, HS256, secret from {SECRET_ENV}).")
    parser.add_argument("--session", required=True, help="session id (the sid claim)")
    parser.add_argument("--participant", required=True, help="participant id (the sub claim)")
    parser.add_argument("--role", required=True, choices=ROLES)
    parser.add_argument("--ttl", default="2h", help="lifetime: 30s, 15m, 2h, 1d (default 2h)")
    parser.add_argument("--consent", default=None,
                        help='consent claim as JSON, e.g. \'{"monitoring": ["device"], '
                             '"recording": "prohibited"}\'')
    parser.add_argument("--secret", default=None,
                        help=f"signing secret (default: the {SECRET_ENV} environment variable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get(SECRET_ENV, "")
    token = mint(secret, args.session, args.participant, args.role,
                 parse_duration(args.ttl), args.consent)
    print(token)
    return 0
