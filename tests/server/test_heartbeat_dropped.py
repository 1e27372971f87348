"""A patient heartbeat's ``dropped``: signals its app had to discard (offline queue full).
Checked like any signal's data, and told to the clinicians, the ledger and the metrics."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

from monitor.config import Config
from monitor.server import Sidecar, running
from tests.server.conftest import Factory, Harness, make_config, recv_type, signal, token

LOST = "sessionguard_signals_dropped_total"


async def test_a_bad_dropped_count_is_refused_with_its_seq_and_acknowledged(
        serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await recv_type(c, "status")
    for seq, value in ((1, -1), (2, "3"), (3, True), (4, 2.5)):
        await p.send(signal(seq, "client.heartbeat", {"dropped": value}))
        error = await recv_type(p, "error")
        assert (error["code"], error["seq"]) == ("bad_field", seq)
        assert "client.heartbeat: data.dropped" in error["message"]
        assert (await recv_type(p, "ack"))["seq"] == seq
    # nothing was counted as lost, and the clinician heard of no gap
    await p.send(signal(5, "client.heartbeat", {"dropped": 0}))
    assert (await recv_type(p, "ack"))["seq"] == 5
    status = h.sidecar.sessions.get("s1").status(0)
    assert status["gaps"] == [] and status["participants"][0]["lost"] == 0
    assert h.sidecar.metrics.registry.get_sample_value(LOST, {"reason": "client_queue"}) is None


async def test_dropped_signals_are_told_to_clinicians_stored_and_counted(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await recv_type(c, "status")
    # as the SDK resends after an outage: a batch whose heartbeat carries the count
    batch = [json.loads(signal(10, "client.key", {"combo": "PrintScreen"})),
             json.loads(signal(11, "client.heartbeat", {"dropped": 12}))]
    await p.send(json.dumps({"type": "signals", "items": batch}))
    assert sorted((await recv_type(p, "ack"))["seqs"]) == [10, 11]
    told = await recv_type(c, "status", where=lambda m: bool(m.get("gaps")))
    assert told["blind"] is False  # a gap in the record, not blindness now
    assert told["participants"][0]["lost"] == 12
    assert told["gaps"] == [
        "the app of patient p1 could not deliver 12 signals while it was offline (its queue "
        "for them was full): the record of this session has a gap, and any sign of recording "
        "among them was missed"]
    # resent (its ack was lost): not counted twice
    await p.send(signal(11, "client.heartbeat", {"dropped": 12}))
    assert (await recv_type(p, "ack"))["seq"] == 11
    await p.send(signal(12, "client.heartbeat", {"dropped": 1}))
    assert (await recv_type(p, "ack"))["seq"] == 12
    again = await recv_type(c, "status", where=lambda m: bool(m.get("gaps")))
    assert again["participants"][0]["lost"] == 13 and "13 signals" in again["gaps"][0]
    # a clinician who joins later is told too
    late = await h.connect(token("s1", "c2", "clinician"))
    first = await recv_type(late, "status")
    assert first["participants"][0]["lost"] == 13
    # the ledger: the heartbeats as signals, and the status changes with their cause
    entries = await h.sidecar.store.entries("s1")
    causes = [e["body"]["cause"] for e in entries if e["kind"] == "status"]
    assert causes.count("signals_lost") == 2
    beats = [e["body"]["data"] for e in entries
             if e["kind"] == "signal" and e["body"]["signal"] == "client.heartbeat"]
    assert beats == [{"dropped": 12}, {"dropped": 1}]
    assert (await h.sidecar.store.verify("s1")).ok
    registry = h.sidecar.metrics.registry
    assert registry.get_sample_value(LOST, {"reason": "client_queue"}) == 13
    assert registry.get_sample_value("sessionguard_status_changes_total",
                                     {"cause": "signals_lost"}) == 2


async def test_a_gap_is_reported_without_the_device_scope_too(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient(consent={"monitoring": [], "recording": "prohibited"})
    await recv_type(c, "status")
    await p.send(signal(1, "client.heartbeat", {"dropped": 1}))
    assert (await recv_type(p, "ack"))["seq"] == 1
    told = await recv_type(c, "status", where=lambda m: bool(m.get("gaps")))
    assert "could not deliver 1 signal while" in told["gaps"][0]
    # the heartbeat itself is outside the consent: not stored
    entries = await h.sidecar.store.entries("s1")
    assert "signal" not in [e["kind"] for e in entries]


async def _started(stack: AsyncExitStack, config: Config) -> Harness:
    """A sidecar of its own on ``config`` (its store), stopped when ``stack`` closes: the
    ``serve`` fixture's keep running to the test's end, so two of them share the store."""
    sidecar = Sidecar(config)
    return Harness(sidecar, await stack.enter_async_context(running(sidecar, "127.0.0.1", 0)),
                   stack)


async def test_a_gap_is_still_told_after_a_restart(tmp_path: Path) -> None:
    """The lost count was kept in memory only: a restarted sidecar told the clinicians of no
    gap. It is read back from the ledger's status entries and goes on from there."""
    config = make_config(tmp_path)
    async with AsyncExitStack() as stack:
        h = await _started(stack, config)
        c = await h.clinician()
        p = await h.patient()
        await p.send(signal(1, "client.heartbeat", {"dropped": 4}))
        assert (await recv_type(p, "ack"))["seq"] == 1
        told = await recv_type(c, "status", where=lambda m: bool(m.get("gaps")))
        assert told["participants"][0]["lost"] == 4
    async with AsyncExitStack() as stack:  # a new process's state: only the ledger remains
        h = await _started(stack, config)
        c = await h.clinician()
        p = await h.patient()
        told = await recv_type(c, "status", where=lambda m: bool(m.get("participants")))
        assert told["participants"][0]["lost"] == 4
        assert "could not deliver 4 signals" in told["gaps"][0]
        await p.send(signal(1, "client.heartbeat", {"dropped": 2}))
        assert (await recv_type(p, "ack"))["seq"] == 1
        again = await recv_type(c, "status", where=lambda m: bool(m.get("gaps"))
                                and m["participants"][0]["lost"] != 4)
        assert again["participants"][0]["lost"] == 6
        # a patient of the session who lost nothing is not given anyone else's count
        await h.patient(participant="p2")
        both = await recv_type(c, "status", where=lambda m: len(m["participants"]) == 2)
        assert {r["participant"]: r["lost"] for r in both["participants"]} == {"p1": 6, "p2": 0}
