"""Recording requests on the wire: what a clinician's decision on a request the sidecar does
not hold is answered with."""

from __future__ import annotations

import json

from tests.server.conftest import Factory, recv_json, recv_type, token


async def test_unknown_request_names_the_request_in_a_field(serve: Factory) -> None:
    h = await serve()
    c = await h.clinician()
    p = await h.patient()
    await p.send(json.dumps({"type": "recording.request", "reason": "review"}))
    rid = (await recv_type(p, "ok"))["id"]
    await recv_type(c, "recording.request")
    await c.send(json.dumps({"type": "recording.decision", "id": rid, "approve": False}))
    await recv_type(c, "recording.decision")
    for asked in (rid, "never-asked-0001"):  # decided already; never known
        await c.send(json.dumps({"type": "recording.decision", "id": asked, "approve": True}))
        error = await recv_type(c, "error")
        assert (error["code"], error["id"]) == ("unknown_request", asked)
        assert error["message"] == f"no pending recording request {asked!r}"  # as before
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_invalid_messages_total", {"reason": "unknown_request"}) == 2


def _entry(kind: str, when: int, **body: object) -> dict[str, object]:
    return {"kind": kind, "at": when, "body": body}


def test_requests_read_back_from_the_ledger() -> None:
    from monitor.sessions import Session

    ledger = [
        _entry("consent", 1, monitoring=["device"], recording="prohibited", by="token"),
        # p1 asked before a sidecar that lost requests restarted, then asked again
        _entry("recording_request", 2, id="old-p1-0001", participant="p1", reason="a", at=2),
        _entry("recording_request", 3, id="new-p1-0002", participant="p1", reason="b", at=3),
        _entry("recording_decision", 4, id="not-asked-01", approve=True, by="c1", at=4),
        *[entry for k in range(20) for entry in (
            _entry("recording_request", 10 + 2 * k, id=f"p2-req-{k:04d}", participant="p2",
                   reason="", at=10 + 2 * k),
            _entry("recording_decision", 11 + 2 * k, id=f"p2-req-{k:04d}", approve=k == 19,
                   by="c1", at=11 + 2 * k))],
        _entry("consent", 60, monitoring=["device"], recording="patient_allowed",
               by="clinician:c1"),
        _entry("consent", 61, monitoring=["device"], recording="prohibited", by="token"),
    ]
    session = Session("s1")
    session.restore_requests(ledger, keep=16)
    assert session.requests_restored
    assert list(session.pending_requests.values()) == [
        {"type": "recording.request", "id": "new-p1-0002", "participant": "p1", "reason": "b",
         "at": 3}]
    assert list(session.decided_requests) == [f"p2-req-{k:04d}" for k in range(4, 20)]
    assert session.decided_requests["p2-req-0019"] == ("p2", True)
    assert session.decided_requests["p2-req-0018"] == ("p2", False)
    # the policy a clinician set last stays (a token's does not override it)
    assert session.consent.recording == "patient_allowed" and session.recording_by_clinician
    # a ledger without clinicians' decisions leaves the consent alone
    fresh = Session("s2")
    fresh.restore_requests(ledger[:1], keep=16)
    assert fresh.consent.recording == "prohibited" and not fresh.recording_by_clinician


async def test_a_store_that_cannot_be_read_back_refuses_the_channel_until_it_can(
        serve: Factory) -> None:
    """The requests of a session the sidecar does not hold yet are read from the store when
    its first channel opens: a read that fails refuses the channel in words (1013), never
    opens it without the requests, and the next channel reads them."""
    from signals.errors import StorageError

    h = await serve()
    # a request from before a restart (the sidecar has not seen the session yet)
    await h.sidecar.store.append("s1", "recording_request", 1, {
        "id": "rr-before-0001", "participant": "p1", "reason": "notes", "at": 1})
    original, broken = h.sidecar.store.entries, [True]

    async def entries(*args: object, **kwargs: object) -> object:
        if broken[0]:
            raise StorageError("database is locked")
        return await original(*args, **kwargs)

    h.sidecar.store.entries = entries
    refused = await h.connect(token("s1", "c1", "clinician"))
    assert (await recv_type(refused, "error"))["code"] == "unavailable"
    await refused.wait_closed()
    assert refused.close_code == 1013
    broken[0] = False
    clinician = await h.connect(token("s1", "c1", "clinician"))
    assert (await recv_json(clinician))["type"] == "status"
    assert (await recv_json(clinician))["id"] == "rr-before-0001"
    assert h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_connections", {"role": "clinician"}) == 1
