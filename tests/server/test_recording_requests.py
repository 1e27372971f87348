"""Recording requests on the wire: what a clinician's decision on a request the sidecar does
not hold is answered with."""

from __future__ import annotations

import json

from tests.server.conftest import Factory, recv_type


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
