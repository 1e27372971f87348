"""A hand-made but realistic session written into a real ``SqliteStore``."""

from __future__ import annotations

from monitor.store import SqliteStore

__all__ = ["T0", "populate"]

T0 = 1_764_300_000_000


def populate(store: SqliteStore, session: str = "s-report", t0: int = T0) -> dict[str, str]:
    """Consent, signals, two alerts (one acked + false alarm, one confirmed), a blind period,
    a recording request approved. Returns the alert ids by rule."""
    full = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
    store.append(session, "consent", t0, {**full, "at": t0, "by": "token"})
    store.append(session, "status", t0 + 500, {"blind": False, "at": t0 + 500, "reasons": []})
    store.append(session, "signal", t0 + 60_000, {
        "signal": "client.visibility", "at": t0 + 60_000, "data": {"state": "hidden"},
        "participant": "p1", "source": "client", "seq": 1})
    store.append(session, "signal", t0 + 61_000, {
        "signal": "client.heartbeat", "at": t0 + 61_000, "data": {}, "participant": "p1",
        "source": "client", "seq": 2})
    tab = {"id": "a-tab", "session": session, "participant": "p1", "rule": "tab-hidden",
           "severity": "notice", "title": "Patient left the call tab",
           "message": "The patient's call tab was hidden for 5 s.", "confidence": 0.6,
           "suggested_response": ["Ask whether everything is all right."],
           "evidence": [{"signal": "client.visibility", "at": t0 + 60_000,
                         "data": {"state": "hidden"}}], "at": t0 + 65_000}
    store.append_alert(session, tab)
    store.append(session, "ack", t0 + 70_000, {"id": "a-tab", "at": t0 + 70_000, "by": "c1"})
    store.append(session, "feedback", t0 + 71_000, {"id": "a-tab", "verdict": "false_positive",
                                                    "at": t0 + 71_000, "by": "c1"})
    store.append(session, "signal", t0 + 120_000, {
        "signal": "client.display_capture", "at": t0 + 120_000,
        "data": {"api": "getDisplayMedia"}, "participant": "p1", "source": "client", "seq": 3})
    cap = {"id": "a-cap", "session": session, "participant": "p1", "rule": "display-capture",
           "severity": "critical", "title": "Screen capture started in the call page",
           "message": "A screen or tab capture began inside the call page.", "confidence": 0.9,
           "suggested_response": ["Remind the patient of the recording policy."],
           "evidence": [{"signal": "client.display_capture", "at": t0 + 120_000,
                         "data": {"api": "getDisplayMedia"}}], "at": t0 + 120_100}
    store.append_alert(session, cap)
    store.append(session, "feedback", t0 + 130_000, {"id": "a-cap", "verdict": "confirmed",
                                                     "at": t0 + 130_000})
    store.append(session, "status", t0 + 180_000, {
        "blind": True, "at": t0 + 180_000, "reasons": ["patient p1 disconnected"]})
    store.append(session, "status", t0 + 240_000, {"blind": False, "at": t0 + 240_000,
                                                   "reasons": []})
    store.append(session, "recording_request", t0 + 250_000, {
        "id": "r1", "participant": "p1", "reason": "to review exercises", "at": t0 + 250_000})
    store.append(session, "recording_decision", t0 + 260_000, {"id": "r1", "approve": True,
                                                               "at": t0 + 260_000})
    store.append(session, "consent", t0 + 260_000, {**full, "recording": "patient_allowed",
                                                    "at": t0 + 260_000, "by": "clinician"})
    store.append(session, "skip", t0 + 270_000, {
        "rule": "no-face", "session": session, "participant": "p1", "signal": "video.no_person",
        "at": t0 + 270_000, "missing": ["video"]})
    return {"tab-hidden": "a-tab", "display-capture": "a-cap"}
