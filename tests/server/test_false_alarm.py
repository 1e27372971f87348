"""An alert a clinician marks a false alarm mutes its repeats for the rest of the session: a
repeat (same rule, same fingerprint) up to its severity is still stored, delivered and sent
by webhook, with ``muted``, so the panel shows it without announcing it. A ``confirmed``
verdict ends the muting; a restarted sidecar keeps it (read back from the ledger)."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import websockets
from websockets.asyncio.client import ClientConnection

from monitor.config import Config
from monitor.report import build_report, render_html, tuning
from monitor.server import Sidecar, running
from monitor.store import SqliteStore
from tests.server.conftest import (
    DEVICE,
    Factory,
    make_config,
    recv_json,
    recv_type,
    signal,
    token,
)

KEY = {"combo": "PrintScreen"}


async def verdict(channel: ClientConnection, alert_id: str, what: str) -> None:
    await channel.send(json.dumps({"type": "alert.feedback", "id": alert_id, "verdict": what}))
    assert (await recv_type(channel, "ok"))["ref"] == "alert.feedback"
    await recv_type(channel, "alert.state", where=lambda m: m["id"] == alert_id)


async def test_a_false_alarm_mutes_its_repeats_until_confirmed(serve: Factory) -> None:
    h = await serve()
    dr = await h.clinician(participant="dr")
    sup = await h.clinician(participant="supervisor")
    p1 = await h.patient()
    p2 = await h.patient(participant="p2")
    await p1.send(signal(1, "client.key", KEY))
    first = await recv_type(dr, "alert")
    assert "muted" not in first and first["fingerprint"]
    await verdict(dr, first["id"], "false_positive")

    # the same rule for the same participant: delivered (to every clinician), muted
    await p1.send(signal(2, "client.key", KEY))
    repeats = [await recv_type(c, "alert", where=lambda m: m["seq"] == 2) for c in (dr, sup)]
    assert all(r["muted"] is True and r["fingerprint"] == first["fingerprint"] for r in repeats)
    # another rule, and the same rule for another participant, are not muted
    await p1.send(signal(3))
    await p2.send(signal(1, "client.key", KEY))
    others = [await recv_type(dr, "alert") for _ in range(2)]
    assert {o["rule"] for o in others} == {"test.recorder", "test.key"}
    assert not any(o.get("muted") for o in others)
    reg = h.sidecar.metrics.registry
    assert reg.get_sample_value("sessionguard_alerts_muted_total", {"rule": "test.key"}) == 1
    assert reg.get_sample_value("sessionguard_alerts_total",
                                {"rule": "test.key", "severity": "warning"}) == 3

    # the muted repeat is in the store as such: a resume brings it muted
    late = await h.clinician(participant="late")
    await late.send(json.dumps({"type": "resume", "after": 0}))
    resumed = {m["seq"]: m for m in [await recv_type(late, "alert") for _ in range(4)]}
    assert resumed[2]["muted"] is True and "muted" not in resumed[1]

    # the supervisor confirms the repeat: the next one is an alert again
    await verdict(sup, repeats[0]["id"], "confirmed")
    await p1.send(signal(4, "client.key", KEY))
    again = await recv_type(dr, "alert", where=lambda m: m["seq"] == 5)
    assert again["rule"] == "test.key" and "muted" not in again


CAPTURE_RULE = """
rules:
  - id: test.key
    title: Screenshot key
    signals: [client.key]
    severity: warning
    capture: true
    message: A screenshot key combination was pressed.
    agreed_message: A screenshot key combination was pressed; recording is agreed.
    cooldown: 0s
    max_per_session: 10000
"""


async def test_a_more_severe_repeat_is_not_muted(serve: Factory, tmp_path: Path) -> None:
    rules = tmp_path / "capture-rules.yaml"
    rules.write_text(CAPTURE_RULE)
    h = await serve(env={"SESSIONGUARD_RULES": str(rules)})
    dr = await h.clinician(participant="dr")
    p1 = await h.patient()

    async def policy(recording: str) -> None:
        await dr.send(json.dumps({"type": "consent.set", "recording": recording}))
        await recv_type(dr, "status", where=lambda m: m["consent"]["recording"] == recording)

    async def key(seq: int) -> dict[str, object]:
        await p1.send(signal(seq, "client.key", KEY))
        return await recv_type(dr, "alert")

    await policy("patient_allowed")
    info = await key(1)  # a capture while recording is agreed: information only
    assert info["severity"] == "info"
    await verdict(dr, info["id"], "false_positive")
    await policy("prohibited")
    warning = await key(2)  # the same fingerprint, now more severe: announced
    assert (warning["severity"], warning["fingerprint"]) == ("warning", info["fingerprint"])
    assert "muted" not in warning
    await policy("patient_allowed")
    assert (await key(3))["muted"] is True


async def sidecar_with_pair(stack: AsyncExitStack, config: Config
                            ) -> tuple[ClientConnection, ClientConnection]:
    """A sidecar on ``config`` (its store) in ``stack``, with clinician dr and patient p1."""
    port = await stack.enter_async_context(running(Sidecar(config), "127.0.0.1", 0))
    url = f"ws://127.0.0.1:{port}/v1/ws"
    dr = await stack.enter_async_context(
        websockets.connect(f"{url}?token={token('s1', 'dr', 'clinician')}"))
    p1 = await stack.enter_async_context(
        websockets.connect(f"{url}?token={token('s1', 'p1', 'patient', DEVICE)}"))
    await recv_type(p1, "consent")
    return dr, p1


async def test_the_muting_survives_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with AsyncExitStack() as stack:
        dr, p1 = await sidecar_with_pair(stack, config)
        await p1.send(signal(1, "client.key", KEY))
        first = await recv_type(dr, "alert")
        await verdict(dr, first["id"], "false_positive")
    async with AsyncExitStack() as stack:  # a new process's state: only the ledger remains
        dr, p1 = await sidecar_with_pair(stack, config)
        await p1.send(signal(2, "client.key", KEY))
        assert await recv_json(p1) == {"type": "ack", "seq": 2}
        repeat = await recv_type(dr, "alert")
        assert repeat["seq"] == 2 and repeat["muted"] is True
    # the integrity report and the tuning view count it
    with SqliteStore(config.store.db) as store:
        report = build_report(store, "s1")
        [row] = tuning(store, 0, 2**62)
    assert [a["muted"] for a in report["alerts"]] == [False, True]
    assert report["counts"]["muted"] == 1 and "1 shown muted" in report["summary"]
    assert render_html(report).count("shown muted (a repeat of a false alarm)") == 1
    assert (row["rule"], row["alerts"], row["false_positive"], row["muted"]) == (
        "test.key", 2, 1, 1)
