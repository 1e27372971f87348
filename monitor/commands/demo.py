"""``sessionguard demo [--host H] [--port P]``: the sidecar with the embedded default config, a
freshly generated token secret and the demo pages; prints a patient and a clinician URL for a
new demo session with full monitoring consent. One demo-only rule (:data:`DEMO_RULES`) is
added to the default rules so that switching the patient tab away shows an alert in seconds.

Embedding (tests, notebooks)::

    async with demo_running(port=0) as demo:
        print(demo.patient_url, demo.clinician_url)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal as _signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import DEFAULT_RULES_DIR
from monitor.allocator import keep_freed_memory
from monitor.commands import argtypes, describe
from signals.consent import FULL_MONITORING

__all__ = ["DEMO_RULES", "DEMO_TTL_S", "Demo", "demo_running", "register", "run"]

DEMO_TTL_S = 8 * 3600

#: Added to the default rules in the demo only. The default ``page-hidden-long`` waits two
#: minutes (brief switches are normal); a newcomer trying the demo should see an alert within
#: seconds of switching the patient tab away.
DEMO_RULES = """\
rules:
  - id: demo-page-hidden
    title: The patient switched away from the call (demo rule)
    description: >
      Demo only (sessionguard demo): the call page has been hidden for 3 seconds. The default
      rules wait two minutes for this, because brief switches are normal.
    tags: [attention, page, demo]
    signals: [client.visibility]
    when: state == "hidden"
    hold: 3s
    severity: notice
    confidence: 0.6
    message: >
      The call page has been in the background for $duration: another tab or app is in front.
    suggested_response:
      - Ask gently whether everything is all right.
      - If it fits the conversation, remind the patient of the recording policy.
    cooldown: 30s
"""


@dataclass(frozen=True)
class Demo:
    """A running demo: its session, tokens and the URLs to open."""

    session: str
    base_url: str
    patient_token: str
    clinician_token: str
    sidecar: Any

    @property
    def patient_url(self) -> str:
        return f"{self.base_url}/demo/patient.html?token={self.patient_token}"

    @property
    def clinician_url(self) -> str:
        return f"{self.base_url}/demo/clinician.html?token={self.clinician_token}"

    @property
    def panel_url(self) -> str:
        return f"{self.base_url}/panel/panel.html?token={self.clinician_token}"

    @property
    def report_url(self) -> str:
        return (f"{self.base_url}/v1/sessions/{self.session}/report?format=html"
                f"&token={self.clinician_token}")


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@contextlib.asynccontextmanager
async def demo_running(host: str = "127.0.0.1", port: int = 0, *, db: str | Path | None = None,
                       config_path: str | Path | None = None,
                       **sidecar_options: Any) -> AsyncIterator[Demo]:
    """Start the sidecar (embedded default config, generated secret) and yield a :class:`Demo`
    for a fresh session. ``db`` overrides the audit database path; ``sidecar_options`` go to
    :class:`monitor.server.Sidecar` (e.g. ``media_factory=None``)."""
    from monitor import tokens
    from monitor.config import load_config
    from monitor.server import Sidecar, running

    config = load_config(config_path)
    changes: dict[str, Any] = {}
    if db is not None:
        changes["store"] = {**config.store.model_dump(), "db": str(db)}
    with tempfile.TemporaryDirectory(prefix="sessionguard-demo-") as tmp:
        demo_rules = Path(tmp) / "demo-rules.yaml"
        demo_rules.write_text(DEMO_RULES, encoding="utf-8")
        changes["rules"] = [*(config.rules or (DEFAULT_RULES_DIR,)), demo_rules]
        config = config.model_validate({**config.model_dump(), **changes})
        secret = secrets.token_urlsafe(32)
        sidecar = Sidecar(config, secret=secret, **sidecar_options)  # rules are read here
    session = f"demo-{uuid.uuid4().hex[:8]}"
    patient = tokens.mint(secret, session, "patient-1", "patient", DEMO_TTL_S, FULL_MONITORING)
    clinician = tokens.mint(secret, session, "clinician-1", "clinician", DEMO_TTL_S,
                            FULL_MONITORING)
    async with running(sidecar, host, port) as bound:
        yield Demo(session=session, base_url=f"http://{_url_host(host)}:{bound}",
                   patient_token=patient, clinician_token=clinician, sidecar=sidecar)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="serve plus demo pages and a generated secret; prints two URLs",
        description=describe(__doc__))
    parser.add_argument("--host", type=argtypes.host, default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=argtypes.port, default=8750,
                        help="port (default 8750; 0: any)")
    parser.add_argument("--db", default=None,
                        help="audit database (default: the config's, sessionguard.db)")
    parser.set_defaults(func=run)


def _print_urls(demo: Demo) -> None:
    print(f"sessionguard demo running on {demo.base_url} (session {demo.session})\n"
          f"\n  patient:   {demo.patient_url}\n  clinician: {demo.clinician_url}\n"
          f"\nOpen both as tabs of one browser window. Switch away from the patient tab for a "
          f"few seconds: the clinician panel "
          f"shows an alert.\nAfter the call, the integrity report:\n  {demo.report_url}\n"
          f"  (or: sessionguard report {demo.session} > report.html)\n"
          f"Stop with Ctrl-C.", flush=True)


def run(args: argparse.Namespace) -> int:
    keep_freed_memory()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (_signal.SIGTERM, _signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        async with demo_running(args.host, args.port, db=args.db) as demo:
            _print_urls(demo)
            await stop.wait()

    asyncio.run(main())
    return 0
