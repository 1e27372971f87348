"""What the sidecar's own loggers write, with every level on (an embedder running its root
logger at DEBUG): ids only. Neither the access token (in the handshake's query) nor what a
patient's signals carry (device names) reaches a log record."""

from __future__ import annotations

import json
import logging

import pytest

from tests.server.conftest import DEVICE, Factory, recv_json, token

LABEL = "BlackHole 2ch (Existential Audio)"


async def test_debug_logging_keeps_tokens_and_signals_out(
        serve: Factory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h = await serve()
    secret_token = token("s1", "p1", "patient", DEVICE)
    patient = await h.connect(secret_token)
    assert (await recv_json(patient))["type"] == "consent"
    await patient.send(json.dumps({"type": "signal", "seq": 1, "signal": "client.devices",
                                   "at": 0, "data": {"change": "initial", "devices": [
                                       {"kind": "audioinput", "label": LABEL, "id": "d1"}]}}))
    assert await recv_json(patient) == {"type": "ack", "seq": 1}
    await patient.close()
    ours = [r for r in caplog.records if not r.name.startswith("websockets.client")]
    assert any(r.name == "sessionguard.ws" for r in ours)  # its INFO lines still come
    signature = secret_token.rsplit(".", 1)[1]
    leaks = [f"{r.name}: {r.getMessage()}" for r in ours
             if signature in r.getMessage() or "BlackHole" in r.getMessage()]
    assert leaks == []
