"""Recording requests survive a SIGKILL of a real ``sessionguard serve``: the one still waiting
is offered to clinicians again, the patient asking again is told it waits (and then the
decision), a decision the patient missed before the crash is still answered."""

from __future__ import annotations

import asyncio
import json
import os
import signal as signals
import sys
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from monitor.store import SqliteStore
from tests.server.conftest import DEVICE, SECRET, recv_json, recv_type, token
from tests.server.test_durability import start_serve

WAITING = "rr-waiting-0001"
DECIDED = "rr-decided-0002"


def ask(rid: str, reason: str = "to review the exercises") -> str:
    return json.dumps({"type": "recording.request", "reason": reason, "id": rid})


async def connect(port: int, participant: str, role: str) -> ClientConnection:
    consent = DEVICE if role == "patient" else None
    return await websockets.connect(
        f"ws://127.0.0.1:{port}/v1/ws?token={token('s1', participant, role, consent)}")


async def stop(proc: asyncio.subprocess.Process, how: signals.Signals) -> None:
    if proc.returncode is None:
        proc.send_signal(how)
        await asyncio.wait_for(proc.wait(), 30)


async def before_the_crash(port: int) -> None:
    """p1's request waits; p2's was approved while p2 was away (it missed the decision)."""
    clinician = await connect(port, "c1", "clinician")
    p1 = await connect(port, "p1", "patient")
    p2 = await connect(port, "p2", "patient")
    for patient, rid in ((p1, WAITING), (p2, DECIDED)):
        await recv_type(patient, "consent")
        await patient.send(ask(rid))
        assert (await recv_type(patient, "ok"))["id"] == rid  # stored before this ok
        await recv_type(clinician, "recording.request", where=lambda m, r=rid: m["id"] == r)
    await p2.close()
    await clinician.send(json.dumps({"type": "recording.decision", "id": DECIDED,
                                     "approve": True}))
    await recv_type(clinician, "recording.decision")
    await recv_type(clinician, "status",
                    where=lambda m: m["consent"]["recording"] == "patient_allowed")


async def requests_until_resumed(clinician: ClientConnection) -> tuple[list[dict[str, Any]],
                                                                       dict[str, Any]]:
    """The recording requests a (re)connected clinician is sent, up to its resume's ok; and
    its first status."""
    first = await recv_json(clinician)
    assert first["type"] == "status"
    await clinician.send(json.dumps({"type": "resume", "after": 0}))
    requests = []
    while (message := await recv_json(clinician))["type"] != "ok":
        if message["type"] == "recording.request":
            requests.append(message)
    return requests, first


async def test_a_waiting_request_survives_sigkill_and_is_decided_after(tmp_path: Path) -> None:
    proc, port = await start_serve(tmp_path)
    try:
        await before_the_crash(port)
    finally:
        await stop(proc, signals.SIGKILL)
    proc, port = await start_serve(tmp_path)
    try:
        # A clinician connecting after the restart is offered the request still waiting,
        # and only that one; the policy the approval set is still in force.
        clinician = await connect(port, "c1", "clinician")
        requests, status = await requests_until_resumed(clinician)
        assert [(r["id"], r["participant"], r["reason"]) for r in requests] == [
            (WAITING, "p1", "to review the exercises")]
        assert status["consent"]["recording"] == "patient_allowed"
        # The patient whose request waits asks again after its reconnect: it still waits,
        # and nothing new reaches the clinicians.
        p1 = await connect(port, "p1", "patient")
        assert (await recv_type(p1, "consent"))["recording"] == "patient_allowed"
        await p1.send(ask(WAITING))
        assert await recv_type(p1, "ok") == {"type": "ok", "ref": "recording.request",
                                             "id": WAITING, "pending": True}
        # The patient that missed the decision before the crash is answered with it.
        p2 = await connect(port, "p2", "patient")
        await recv_type(p2, "consent")
        await p2.send(ask(DECIDED))
        assert await recv_type(p2, "recording.decision") == {
            "type": "recording.decision", "id": DECIDED, "approved": True}
        # The clinician decides the waiting request; the patient gets the decision.
        await clinician.send(json.dumps({"type": "recording.decision", "id": WAITING,
                                         "approve": False}))
        assert await recv_type(p1, "recording.decision") == {
            "type": "recording.decision", "id": WAITING, "approved": False}
        # A second clinician now is offered nothing.
        late = await connect(port, "c2", "clinician")
        assert (await requests_until_resumed(late))[0] == []
        for ws in (clinician, late, p1, p2):
            await ws.close()
        await stop(proc, signals.SIGTERM)
        assert proc.returncode == 0
    finally:
        await stop(proc, signals.SIGKILL)
    with SqliteStore(tmp_path / "audit.db") as store:
        kinds = [e["kind"] for e in store.entries("s1")]
    assert kinds.count("recording_request") == 2  # each asked the clinicians once
    assert kinds.count("recording_decision") == 2
    verify = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "sessionguard"), "audit", "verify", "s1",
        env={**os.environ, "SESSIONGUARD_DB": str(tmp_path / "audit.db"),
             "SESSIONGUARD_SECRET": SECRET},
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await verify.communicate()
    assert verify.returncode == 0, (out + err).decode()


async def test_a_scope_withdrawn_before_a_restart_stays_withdrawn(tmp_path: Path) -> None:
    """Scopes combine as an intersection of the session's patient tokens. After a SIGKILL the
    next token used to set them afresh, so audio another token had withdrawn was analysed
    again; now the consent last in force is read back and the token narrows it further."""
    both = {"monitoring": ["device", "audio"], "recording": "patient_allowed"}
    url = "ws://127.0.0.1:{port}/v1/ws?token={token}"
    proc, port = await start_serve(tmp_path)
    try:
        clinician = await connect(port, "c1", "clinician")
        p1 = await websockets.connect(url.format(port=port, token=token("s1", "p1", "patient",
                                                                        both)))
        assert (await recv_type(p1, "consent"))["monitoring"] == ["device", "audio"]
        p2 = await websockets.connect(url.format(port=port, token=token(
            "s1", "p2", "patient", {"monitoring": ["device"], "recording": "patient_allowed"})))
        assert (await recv_type(p1, "consent"))["monitoring"] == ["device"]
        # the clinician's status after p2 connected follows the ledger write
        await recv_type(clinician, "status",
                        where=lambda m: m["consent"]["monitoring"] == ["device"])
        await p2.close()
    finally:
        await stop(proc, signals.SIGKILL)
    proc, port = await start_serve(tmp_path)
    try:
        p1 = await websockets.connect(url.format(port=port, token=token("s1", "p1", "patient",
                                                                        both)))
        consent = await recv_type(p1, "consent")
        assert consent["monitoring"] == ["device"]
        assert consent["recording"] == "patient_allowed"
        await p1.close()
        await stop(proc, signals.SIGTERM)
    finally:
        await stop(proc, signals.SIGKILL)
    with SqliteStore(tmp_path / "audit.db") as store:
        last = [e["body"] for e in store.entries("s1") if e["kind"] == "consent"][-1]
    assert last["monitoring"] == ["device"] and last["by"] == "token"
