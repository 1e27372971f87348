"""Nothing lost: resume after SIGKILL of a real ``sessionguard serve``, and webhooks to a real
local HTTP receiver that is down first and comes up later."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal as signals
import socket
import sys
from pathlib import Path
from random import Random
from typing import Any

import websockets
from prometheus_client import CollectorRegistry

from monitor.store import SqliteStore
from monitor.store_async import AsyncStore
from monitor.webhooks import Backoff, WebhookDelivery, WebhookTarget, verify_signature
from tests.server.conftest import (
    DEVICE,
    SECRET,
    Factory,
    make_config,
    recv_json,
    recv_type,
    signal,
    token,
    write_rules,
)


async def start_serve(tmp_path: Path, port: int = 0) -> tuple[asyncio.subprocess.Process, int]:
    """A real ``sessionguard serve`` on ``port`` (0: any free one) with the audit store in
    ``tmp_path``; starting it again on the same ``tmp_path`` (and port) is a restart."""
    env = {**os.environ, "SESSIONGUARD_SECRET": SECRET,
           "SESSIONGUARD_DB": str(tmp_path / "audit.db"),
           "SESSIONGUARD_RULES": str(write_rules(tmp_path)),
           "SESSIONGUARD_MEDIA_ENABLED": "false"}
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "sessionguard"), "serve", "--port", str(port), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=(tmp_path / "serve.log").open("ab"),
        cwd=tmp_path)
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, line + (tmp_path / "serve.log").read_text()
    return proc, int(match.group(1))


async def test_resume_after_sigkill_loses_nothing(tmp_path: Path) -> None:
    proc, port = await start_serve(tmp_path)
    url = f"ws://127.0.0.1:{port}/v1/ws?token="
    try:
        clinician = await websockets.connect(url + token("s1", "c1", "clinician"))
        patient = await websockets.connect(url + token("s1", "p1", "patient", DEVICE))
        await recv_json(patient)
        for seq in (1, 2, 3):
            await patient.send(signal(seq))
            assert (await recv_type(patient, "ack"))["seq"] == seq  # acked: alert committed
        seen = await recv_type(clinician, "alert")
        assert seen["seq"] == 1  # the clinician saw only the first before the crash
        proc.send_signal(signals.SIGKILL)
        await proc.wait()
        await clinician.close()
        await patient.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    proc, port = await start_serve(tmp_path)
    url = f"ws://127.0.0.1:{port}/v1/ws?token="
    try:
        clinician = await websockets.connect(url + token("s1", "c1", "clinician"))
        await clinician.send(json.dumps({"type": "resume", "after": 1}))
        resumed = [await recv_type(clinician, "alert") for _ in range(2)]
        assert [a["seq"] for a in resumed] == [2, 3]
        assert all(a["rule"] == "test.recorder" and a["session"] == "s1" for a in resumed)
        patient = await websockets.connect(url + token("s1", "p1", "patient", DEVICE))
        await recv_json(patient)
        await patient.send(signal(4))
        assert (await recv_type(clinician, "alert"))["seq"] == 4  # seqs continue
        await clinician.close()
        await patient.close()
        proc.send_signal(signals.SIGTERM)  # graceful: exits 0
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    with SqliteStore(tmp_path / "audit.db") as store:
        assert store.verify("s1").ok
        assert [a["seq"] for a in store.alerts_after("s1", 0)] == [1, 2, 3, 4]


class Receiver:
    """A real HTTP server on 127.0.0.1 that records signed webhook POSTs."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        verify_signature(self.secret, headers.get("sessionguard-signature"), body)
        await self.received.put(json.loads(body))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_webhook_receiver_down_then_up(serve: Factory, tmp_path: Path) -> None:
    hook_secret = "webhook-secret-0123456789-0123456789"
    port = free_port()
    registry = CollectorRegistry()
    store = AsyncStore(tmp_path / "audit.db", registry=registry)
    delivery = WebhookDelivery(
        store, [WebhookTarget(f"http://127.0.0.1:{port}/hook", hook_secret)],
        backoff=Backoff(base_ms=100, max_ms=400, rng=Random(7)), registry=registry)
    h = await serve(config=make_config(tmp_path), store=store, webhooks=delivery,
                    registry=registry)
    c = await h.clinician()
    p = await h.patient()
    await p.send(signal(1))
    alert = await recv_type(c, "alert")

    def failures() -> float:
        return registry.get_sample_value("sessionguard_webhook_failures_total") or 0.0

    while failures() < 2:  # the receiver is down: attempts fail and are retried
        await asyncio.sleep(0.05)
    receiver = Receiver(hook_secret)
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", port)
    try:
        got = await asyncio.wait_for(receiver.received.get(), 15)
        assert (got["id"], got["seq"], got["rule"]) == (alert["id"], 1, "test.recorder")
        await p.send(signal(2))  # once up, new alerts go straight through
        got = await asyncio.wait_for(receiver.received.get(), 15)
        assert got["seq"] == 2
    finally:
        server.close()
        await server.wait_closed()
    attempts = registry.get_sample_value("sessionguard_webhook_attempts_total") or 0.0
    assert attempts >= failures() + 1 >= 3
