"""Fixtures of the server tests: a real Sidecar on 127.0.0.1 port 0, real websockets clients,
a real SQLite store in tmp_path and a small rule file written by the tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from monitor.config import Config, load_config
from monitor.server import Sidecar, running
from monitor.tokens import mint

SECRET = "test-secret-0123456789-0123456789-abcdef"
DEVICE = {"monitoring": ["device"], "recording": "prohibited"}

RULES = """
rules:
  - id: test.recorder
    title: Recording started in the call page
    signals: [client.media_recorder]
    severity: critical
    message: A MediaRecorder was created in the call page.
    suggested_response: ["Ask calmly whether the session is being recorded."]
    cooldown: 0s
    max_per_session: 10000
  - id: test.key
    title: Screenshot key
    signals: [client.key]
    severity: warning
    message: A screenshot key combination was pressed.
    cooldown: 0s
    max_per_session: 10000
"""


def token(session: str, participant: str, role: str, consent: Any = None, ttl_s: int = 3600,
          secret: str = SECRET) -> str:
    return mint(secret, session, participant, role, ttl_s, consent)


def write_rules(directory: Path) -> Path:
    path = directory / "test-rules.yaml"
    path.write_text(RULES)
    return path


def make_config(tmp_path: Path, **env: str) -> Config:
    rules = write_rules(tmp_path)
    base = {"SESSIONGUARD_DB": str(tmp_path / "audit.db"), "SESSIONGUARD_RULES": str(rules),
            "SESSIONGUARD_SECRET": SECRET, "SESSIONGUARD_MEDIA_ENABLED": "false"}
    return load_config(env={**base, **env})


async def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), timeout)
    value = json.loads(message)
    assert isinstance(value, dict)
    return value


async def recv_type(ws: ClientConnection, kind: str, timeout: float = 10,
                    where: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any]:
    """The next message of type ``kind`` (matching ``where``), skipping the others."""
    async def loop() -> dict[str, Any]:
        while True:
            value = json.loads(await ws.recv())
            if value.get("type") == kind and (where is None or where(value)):
                return dict(value)
    return await asyncio.wait_for(loop(), timeout)


def signal(seq: int, name: str = "client.media_recorder", data: Any = None,
           at: int | None = None) -> str:
    return json.dumps({"type": "signal", "seq": seq, "signal": name,
                       "at": at if at is not None else 0, "data": data or {}})


class Harness:
    """A running sidecar plus a way to open channels on it."""

    def __init__(self, sidecar: Sidecar, port: int, stack: AsyncExitStack) -> None:
        self.sidecar = sidecar
        self.port = port
        self.stack = stack

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def connect(self, tok: str, **kwargs: Any) -> ClientConnection:
        ws = await websockets.connect(f"{self.url}?token={tok}", **kwargs)
        self.stack.push_async_callback(ws.close)
        return ws

    async def patient(self, session: str = "s1", participant: str = "p1",
                      consent: Any = DEVICE) -> ClientConnection:
        ws = await self.connect(token(session, participant, "patient", consent))
        assert (await recv_json(ws))["type"] == "consent"
        return ws

    async def clinician(self, session: str = "s1", participant: str = "c1") -> ClientConnection:
        ws = await self.connect(token(session, participant, "clinician"))
        assert (await recv_json(ws))["type"] == "status"
        return ws


Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Factory]:
    """``await serve(**env_overrides, **sidecar_kwargs)`` → a running :class:`Harness`."""
    async with AsyncExitStack() as stack:
        async def start(env: dict[str, str] | None = None, config: Config | None = None,
                        **kwargs: Any) -> Harness:
            cfg = config or make_config(tmp_path, **(env or {}))
            sidecar = Sidecar(cfg, **kwargs)
            port = await stack.enter_async_context(running(sidecar, "127.0.0.1", 0))
            return Harness(sidecar, port, stack)
        yield start


async def raw_channel(port: int, tok: str, rcvbuf: int | None = None
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A channel opened by hand: the handshake, then nothing (no reads, no pong replies)."""
    import base64
    import os
    import socket

    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((f"GET /v1/ws?token={tok} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    writer.transport.pause_reading()  # type: ignore[attr-defined]
    return reader, writer
