"""``sessionguard serve [--config FILE] [--host H] [--port P]``: run the sidecar until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from monitor.commands import argtypes

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the sidecar (token secret from SESSIONGUARD_SECRET)",
        description="Run the sidecar: WebSocket channels, alerts, metrics and the SDK on one port.")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="configuration file (default: the embedded config/sessionguard.yaml)")
    parser.add_argument("--host", type=argtypes.host, default=None,
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=argtypes.port, default=None,
                        help="port (default 8750; 0: any)")
    parser.set_defaults(func=run)


#: a channel's message limit below this can refuse a browser's WebRTC offer
MIN_OFFER_ROOM = 16_384


def run(args: argparse.Namespace) -> int:
    from monitor.allocator import keep_freed_memory
    from monitor.config import load_config, require_secret
    from monitor.server import Sidecar, serve_forever
    from monitor.tokens import short_secret

    keep_freed_memory()

    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if overrides:
        config = config.with_overrides(**overrides)
    secret = require_secret(config)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("sessionguard")
    weak = short_secret(secret)
    if weak is not None:
        log.warning("%s", weak)
    if config.media.enabled and config.limits.max_message_bytes < MIN_OFFER_ROOM:
        log.warning("limits.max_message_bytes is %d: a WebRTC offer (the media copy) is 3-10 "
                    "KB, so offers may be refused with close 1009; allow at least %d",
                    config.limits.max_message_bytes, MIN_OFFER_ROOM)

    def ready(port: int) -> None:
        print(f"sessionguard listening on http://{config.host}:{port} "
              f"(WebSocket ws://{config.host}:{port}/v1/ws)", flush=True)

    async def main() -> None:
        sidecar = Sidecar(config)
        await serve_forever(sidecar, config.host, config.port, ready)

    asyncio.run(main())
    return 0
