"""A patient's device clock that is off the sidecar's: once two live signals agree on the
offset its signals are placed on the sidecar's clock (signals.clock.ClockOffset), so the
rules' consent changes and holds, which run on the sidecar's clock, judge them where they
happened; heartbeats (liveness) are timed by their arrival, so the absence timers never
depend on the device's clock. The sidecar's clock is the test's here (``Sidecar(clock=)``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from monitor.store import SqliteStore
from tests.server.conftest import Factory, recv_type, signal

DEFAULT_RULES = str(Path(__file__).resolve().parents[2] / "config" / "rules")


class Clock:
    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now


async def test_a_capture_just_after_an_approval_is_judged_under_it_on_a_lagging_clock(
        serve: Factory, tmp_path: Path) -> None:
    """The patient's clock is 3 s behind. The clinician approves recording; the patient then
    shares the screen. Stamped by its clock, the capture came 3 s *before* the approval, and
    was judged under the prohibiting policy: a warning right after the clinician said yes.
    Corrected (two live signals 5 s apart told the offset), it is a note."""
    clock = Clock()
    h = await serve(env={"SESSIONGUARD_RULES": DEFAULT_RULES}, clock=clock)
    clinician = await h.clinician()
    patient = await h.patient()
    lag = 3_000
    for seq in (1, 2):
        await patient.send(signal(seq, "client.focus", {"focused": True}, at=clock.now - lag))
        assert (await recv_type(patient, "ack"))["seq"] == seq
        clock.now += 5_000
    await clinician.send(json.dumps({"type": "consent.set", "recording": "patient_allowed"}))
    await recv_type(clinician, "ok")
    await patient.send(signal(3, "client.display_capture", {"api": "getDisplayMedia"},
                              at=clock.now - lag))
    alert = await recv_type(clinician, "alert")
    assert alert["rule"] == "page-display-capture"
    assert alert["severity"] == "info", alert["message"]
    with SqliteStore(tmp_path / "audit.db") as store:
        stored = [e["body"] for e in store.entries("s1") if e["kind"] == "signal"
                  and e["body"]["signal"] == "client.display_capture"]
    assert stored[0]["clock_offset_ms"] == lag  # the device's own stamp is at - offset
    assert stored[0]["at"] == clock.now


async def test_a_heartbeat_from_a_clock_a_minute_behind_is_not_a_silence(
        serve: Factory, tmp_path: Path) -> None:
    """Stamped a minute in the past, the first heartbeat of a connection armed the 45 s
    absence timer in the past: sdk-silent at the next tick, in a healthy session."""
    clock = Clock()
    h = await serve(env={"SESSIONGUARD_RULES": DEFAULT_RULES}, clock=clock)
    await h.clinician()
    patient = await h.patient()
    await patient.send(signal(1, "client.heartbeat", {}, at=clock.now - 60_000))
    assert (await recv_type(patient, "ack"))["seq"] == 1
    clock.now += 2_000
    await h.sidecar.tick()
    with SqliteStore(tmp_path / "audit.db") as store:
        alerts = [e["body"]["rule"] for e in store.entries("s1") if e["kind"] == "alert"]
    assert alerts == []


async def test_a_correct_clock_is_left_alone(serve: Factory, tmp_path: Path) -> None:
    clock = Clock()
    h = await serve(clock=clock)
    patient = await h.patient()
    ats = []
    for seq in (1, 2):
        ats.append(clock.now - 40)  # the network's delay
        await patient.send(signal(seq, "client.focus", {"focused": True}, at=ats[-1]))
        assert (await recv_type(patient, "ack"))["seq"] == seq
        clock.now += 5_000
    with SqliteStore(tmp_path / "audit.db") as store:
        bodies = [e["body"] for e in store.entries("s1") if e["kind"] == "signal"]
    assert [b["at"] for b in bodies] == ats
    assert not any("clock_offset_ms" in b for b in bodies)
