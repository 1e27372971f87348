"""A patient's device clock that is off the sidecar's: its signals are placed on the sidecar's
clock (signals.clock.ClockOffset), so the rules' consent changes, holds and absences, which
run on the sidecar's clock, judge them where they happened."""

from __future__ import annotations

import json
import time
from pathlib import Path

from monitor.store import SqliteStore
from tests.server.conftest import Factory, recv_type, signal

DEFAULT_RULES = str(Path(__file__).resolve().parents[2] / "config" / "rules")


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_capture_just_after_an_approval_is_judged_under_it_on_a_lagging_clock(
        serve: Factory, tmp_path: Path) -> None:
    """The patient's clock is 3 s behind. The clinician approves recording; the patient then
    shares the screen. Stamped by its clock, the capture came 3 s *before* the approval, and
    was judged under the prohibiting policy: a warning right after the clinician said
    yes. Corrected, it is a note."""
    h = await serve(env={"SESSIONGUARD_RULES": DEFAULT_RULES})
    clinician = await h.clinician()
    patient = await h.patient()
    lag = 3_000
    await patient.send(signal(1, "client.focus", {"focused": True}, at=now_ms() - lag))
    assert (await recv_type(patient, "ack"))["seq"] == 1
    await clinician.send(json.dumps({"type": "consent.set", "recording": "patient_allowed"}))
    await recv_type(clinician, "ok")
    await patient.send(signal(2, "client.display_capture", {"api": "getDisplayMedia"},
                              at=now_ms() - lag))
    alert = await recv_type(clinician, "alert")
    assert alert["rule"] == "page-display-capture"
    assert alert["severity"] == "info", alert["message"]
    with SqliteStore(tmp_path / "audit.db") as store:
        stored = [e["body"] for e in store.entries("s1") if e["kind"] == "signal"
                  and e["body"]["signal"] == "client.display_capture"]
    assert stored[0]["clock_offset_ms"] >= lag  # the device's own stamp is at - offset


async def test_a_correct_clock_is_left_alone(serve: Factory, tmp_path: Path) -> None:
    h = await serve()
    patient = await h.patient()
    at = now_ms() - 40  # the network's delay
    await patient.send(signal(1, "client.focus", {"focused": True}, at=at))
    assert (await recv_type(patient, "ack"))["seq"] == 1
    with SqliteStore(tmp_path / "audit.db") as store:
        (body,) = [e["body"] for e in store.entries("s1") if e["kind"] == "signal"]
    assert body["at"] == at and "clock_offset_ms" not in body
