"""The post-session integrity report and the rule tuning view, built from the audit store.

``build_report(store, session)`` reads one session's audit entries (shape in
docs/internals.md) and returns a plain dict; ``render_html`` turns it into one self-contained
HTML page (inline CSS and SVG, no external assets, printable) and ``render_json`` into JSON
with the same data. ``tuning(store, since_ms, until_ms)`` counts, per rule, alerts,
acknowledgements and feedback over a period so a practice can see which rules are noisy.

The store is duck-typed (:class:`ReportStore`): anything with ``entries(session)``,
``verify(session)`` and ``sessions()`` works, so tests can use the real ``SqliteStore``.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from signals.errors import StorageError

__all__ = [
    "SEVERITIES",
    "ReportStore",
    "build_report",
    "describe_evidence",
    "format_ms",
    "render_html",
    "render_json",
    "summary_text",
    "tuning",
]

SEVERITIES: tuple[str, ...] = ("info", "notice", "warning", "critical")


class ReportStore(Protocol):
    """What the report needs from an audit store (``monitor.store.SqliteStore`` fits)."""

    def entries(self, session: str) -> Iterable[Mapping[str, Any]]: ...

    def verify(self, session: str) -> Any: ...

    def sessions(self) -> Iterable[Any]: ...


def format_ms(at: int | None) -> str:
    """An epoch-ms time as ``YYYY-MM-DD HH:MM:SS UTC`` (empty for ``None``)."""
    if at is None:
        return ""
    stamp = _dt.datetime.fromtimestamp(at / 1000, tz=_dt.UTC)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(ms: int) -> str:
    seconds = max(0, round(ms / 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _verification(result: Any, count: int) -> dict[str, Any]:
    """Normalise whatever ``store.verify`` returns into ``{"ok", "entries", "message"}``."""
    if isinstance(result, bool):
        ok, detail = result, {}
    elif isinstance(result, Mapping):
        detail = dict(result)
        ok = bool(detail.get("ok", detail.get("valid", False)))
    else:
        detail = {
            name: getattr(result, name)
            for name in ("ok", "valid", "entries", "count", "checked", "first_bad_index",
                         "broken_at", "index", "message", "reason", "problem")
            if hasattr(result, name)
        }
        ok = bool(detail.get("ok", detail.get("valid", False)))
    checked = detail.get("entries", detail.get("count", detail.get("checked", count)))
    if not isinstance(checked, int):
        checked = count
    broken = detail.get("first_bad_index", detail.get("broken_at", detail.get("index")))
    message = detail.get("message") or detail.get("reason") or detail.get("problem")
    if not message:
        message = (f"hash chain intact over {checked} entries" if ok
                   else f"hash chain broken at entry {broken}" if broken is not None
                   else "hash chain does not verify")
    return {"ok": ok, "entries": checked, "broken_at": broken if not ok else None,
            "message": str(message)}


def _get(body: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in body and body[name] is not None:
            return body[name]
    return default


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def build_report(store: ReportStore, session_id: str) -> dict[str, Any]:
    """The integrity report of one session as a JSON-ready dict.

    Raises :class:`StorageError` if the store knows nothing about ``session_id``.
    """
    entries = [dict(e) for e in store.entries(session_id)]
    if not entries:
        raise StorageError(f"no audit entries for session {session_id!r}")
    verification = _verification(store.verify(session_id), len(entries))

    signals: list[dict[str, Any]] = []
    alerts: dict[str, dict[str, Any]] = {}
    consent: list[dict[str, Any]] = []
    statuses: list[dict[str, Any]] = []
    feedback: list[dict[str, Any]] = []
    acks: list[dict[str, Any]] = []
    requests: dict[str, dict[str, Any]] = {}
    skipped = 0
    skips: list[dict[str, Any]] = []
    alert_limit: dict[str, Any] | None = None
    deliveries = 0
    abandoned = 0
    participants: set[str] = set()
    lost: dict[str, int] = {}  # per participant: signals its app reported it could not deliver

    for entry in entries:
        kind = entry.get("kind")
        body = entry.get("body") or {}
        if not isinstance(body, Mapping):
            body = {"value": body}
        at = _int(_get(body, "at"), _int(entry.get("at"), 0))
        participant = _get(body, "participant")
        if isinstance(participant, str):
            participants.add(participant)
        if kind == "signal":
            name = str(_get(body, "signal", "name", default="unknown"))
            data = _get(body, "data", default={})
            data = data if isinstance(data, Mapping) else {}
            signals.append({"at": at, "signal": name, "participant": participant,
                            "source": _get(body, "source", default="client"),
                            "data": dict(data),
                            "description": describe_evidence(name, data)})
            dropped = data.get("dropped") if name == "client.heartbeat" else None
            if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0:
                who = participant if isinstance(participant, str) else "unknown"
                lost[who] = lost.get(who, 0) + dropped
        elif kind == "alert":
            alert_id = str(_get(body, "id", default=f"alert-{entry.get('index')}"))
            evidence = [dict(e) for e in _get(body, "evidence", default=[])
                        if isinstance(e, Mapping)]
            for item in evidence:
                item_data = item.get("data") if isinstance(item.get("data"), Mapping) else {}
                item["description"] = describe_evidence(str(item.get("signal", "")), item_data)
            alerts[alert_id] = {
                "id": alert_id, "seq": _get(body, "seq"), "at": at,
                "rule": _get(body, "rule", default="unknown"),
                "severity": _get(body, "severity", default="notice"),
                "title": _get(body, "title", default=""),
                "message": _get(body, "message", default=""),
                "confidence": _get(body, "confidence"),
                "participant": participant,
                "suggested_response": list(_get(body, "suggested_response", default=[])),
                "evidence": evidence,
                "muted": _get(body, "muted", default=False) is True,
                "acknowledged_at": None, "verdict": None, "verdict_at": None,
            }
        elif kind == "consent":
            consent.append({"at": at,
                            "monitoring": list(_get(body, "monitoring", default=[])),
                            "recording": _get(body, "recording", default="prohibited"),
                            "by": _get(body, "by", "source", "reason")})
        elif kind == "status":
            statuses.append({"at": at, "blind": bool(_get(body, "blind", default=False)),
                             "reasons": [str(r) for r in _get(body, "reasons", default=[])],
                             "limited": [str(r) for r in _get(body, "limited", default=[])]})
        elif kind == "feedback":
            item = {"at": at, "id": str(_get(body, "id", "alert", default="")),
                    "verdict": _get(body, "verdict"), "by": _get(body, "by", "participant")}
            feedback.append(item)
        elif kind == "ack":
            acks.append({"at": at, "id": str(_get(body, "id", "alert", default="")),
                         "by": _get(body, "by", "participant")})
        elif kind == "recording_request":
            rid = str(_get(body, "id", default=f"request-{entry.get('index')}"))
            requests[rid] = {"id": rid, "at": at, "participant": participant,
                             "reason": _get(body, "reason", default=""),
                             "decision": None, "decided_at": None}
        elif kind == "recording_decision":
            rid = str(_get(body, "id", default=""))
            approved = _get(body, "approve", "approved")
            request = requests.setdefault(rid, {"id": rid, "at": at, "participant": None,
                                                "reason": "", "decision": None,
                                                "decided_at": None})
            request["decision"] = "approved" if approved else "declined"
            request["decided_at"] = at
        elif kind == "skip" and _get(body, "reason", default="consent") == "alert_limit":
            if alert_limit is None:  # the engine's limit of alerts per session was reached
                alert_limit = {"at": at, "limit": _get(body, "limit", default=None),
                               "rule": _get(body, "rule", default="")}
        elif kind == "skip":
            skipped += 1
            skips.append({"at": at, "rule": _get(body, "rule", default=""),
                          "signal": _get(body, "signal", default=""),
                          "missing": [str(m) for m in _get(body, "missing", default=[])]})
        elif kind == "delivery":
            if _get(body, "abandoned", default=False) is True:
                abandoned += 1
            else:
                deliveries += 1

    for ack in acks:
        if ack["id"] in alerts and alerts[ack["id"]]["acknowledged_at"] is None:
            alerts[ack["id"]]["acknowledged_at"] = ack["at"]
    for item in feedback:
        if item["id"] in alerts:
            alerts[item["id"]]["verdict"] = item["verdict"]
            alerts[item["id"]]["verdict_at"] = item["at"]

    times = [_int(e.get("at"), 0) for e in entries if _int(e.get("at"), 0) > 0]
    start, end = (min(times), max(times)) if times else (0, 0)
    blind = _periods(statuses, end, "blind", "reasons")
    limited = _periods(statuses, end, "limited", "limited")
    alert_list = sorted(alerts.values(), key=lambda a: (a["at"], a["id"]))
    report: dict[str, Any] = {
        "session": session_id,
        "start": start,
        "end": end,
        "participants": sorted(participants),
        "verification": verification,
        "consent": consent,
        "signals": signals,
        "alerts": alert_list,
        "status": statuses,
        "blind_periods": blind,
        "limited_periods": limited,
        "feedback": feedback,
        "acks": acks,
        "recording_requests": list(requests.values()),
        "skipped": skips,
        "alert_limit": alert_limit,
        "signals_lost": dict(sorted(lost.items())),
        "counts": {
            "entries": len(entries),
            "signals": len(signals),
            "alerts": len(alert_list),
            "alerts_by_severity": {s: sum(1 for a in alert_list if a["severity"] == s)
                                   for s in SEVERITIES},
            "acknowledged": sum(1 for a in alert_list if a["acknowledged_at"] is not None),
            "confirmed": sum(1 for a in alert_list if a["verdict"] == "confirmed"),
            "false_positive": sum(1 for a in alert_list if a["verdict"] == "false_positive"),
            "muted": sum(1 for a in alert_list if a["muted"]),
            "skipped_without_consent": skipped,
            "deliveries": deliveries,
            "deliveries_abandoned": abandoned,
            "blind_ms": sum(p["end"] - p["start"] for p in blind),
            "limited_ms": sum(p["end"] - p["start"] for p in limited),
            "signals_lost": sum(lost.values()),
        },
    }
    report["summary"] = summary_text(report)
    return report


def _periods(statuses: list[dict[str, Any]], end: int, flag: str,
             why: str) -> list[dict[str, Any]]:
    """Periods during which ``status[flag]`` was true (``blind``, or a non-empty ``limited``),
    with every sentence of ``status[why]`` seen during each."""
    periods: list[dict[str, Any]] = []
    open_period: dict[str, Any] | None = None
    for status in sorted(statuses, key=lambda s: s["at"]):
        on = bool(status.get(flag))
        if on and open_period is None:
            open_period = {"start": status["at"], "end": None, "reasons": list(status[why])}
        elif on and open_period is not None:
            for reason in status[why]:
                if reason not in open_period["reasons"]:
                    open_period["reasons"].append(reason)
        elif not on and open_period is not None:
            open_period["end"] = status["at"]
            periods.append(open_period)
            open_period = None
    if open_period is not None:
        open_period["end"] = max(end, open_period["start"])
        open_period["open"] = True
        periods.append(open_period)
    return periods


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _skips_sentence(report: Mapping[str, Any]) -> str:
    """The rules not run for lack of consent, each once, with the consent it needs."""
    needs: dict[str, list[str]] = {}
    for skip in report.get("skipped", []):
        missing = needs.setdefault(str(skip["rule"]), [])
        missing.extend(m for m in skip["missing"] if m not in missing)
    if not needs:
        return "Every rule that had a signal could run under the consent given."
    one = len(needs) == 1
    rules = "; ".join(f"{rule} (needs {', '.join(missing) or 'more consent'})"
                      for rule, missing in needs.items())
    return (f"{_plural(len(needs), 'rule')} {'was' if one else 'were'} not run because the "
            f"patient had not consented to what {'it needs' if one else 'they need'}: {rules}.")


def summary_text(report: Mapping[str, Any]) -> str:
    """A plain-text paragraph a clinician can paste into a session note."""
    counts = report["counts"]
    lines = [f"sessionguard integrity report, session {report['session']}."]
    if report["start"]:
        lines.append(f"Monitored from {format_ms(report['start'])} to "
                     f"{format_ms(report['end'])} ({_duration(report['end'] - report['start'])}).")
    if report["consent"]:
        first, last = report["consent"][0], report["consent"][-1]
        scopes = ", ".join(first["monitoring"]) or "nothing"
        lines.append(f"Patient consented to monitoring of: {scopes}; recording policy "
                     f"{first['recording'].replace('_', ' ')}"
                     + (f", later {last['recording'].replace('_', ' ')}."
                        if last["recording"] != first["recording"] else "."))
    by_sev = [f"{n} {s}" for s in reversed(SEVERITIES) if (n := counts["alerts_by_severity"][s])]
    if counts["alerts"]:
        lines.append(f"{_plural(counts['alerts'], 'alert')} ({', '.join(by_sev)}): "
                     f"{counts['acknowledged']} acknowledged, {counts['confirmed']} confirmed, "
                     f"{counts['false_positive']} marked false alarm"
                     + (f"; {counts['muted']} shown muted, as repeats of a false alarm."
                        if counts["muted"] else "."))
        rules = sorted({a["rule"] for a in report["alerts"]})
        lines.append("Rules that fired: " + ", ".join(rules) + ".")
    else:
        lines.append("No alerts were raised.")
    blind = report["blind_periods"]
    if blind:
        lines.append(f"Monitoring was blind for {_duration(counts['blind_ms'])} in "
                     f"{_plural(len(blind), 'period')}.")
    else:
        lines.append("Monitoring was never reported blind.")
    limited = report.get("limited_periods", [])
    if limited:
        lines.append(f"Monitoring was limited for {_duration(counts['limited_ms'])} in "
                     f"{_plural(len(limited), 'period')} (some signs could not be detected, "
                     "e.g. shutter sounds in narrowband audio).")
    lost = report.get("signals_lost", {})
    if lost:
        who = ", ".join(f"patient {p}: {_plural(n, 'signal')}" for p, n in lost.items())
        total = _plural(counts["signals_lost"], "signal")
        lines.append(f"The patient's app could not deliver {total} while it was offline "
                     f"({who}): the record has a gap there.")
    requests = report["recording_requests"]
    if requests:
        decided = ", ".join(r["decision"] or "undecided" for r in requests)
        lines.append(f"Recording requests from the patient: {len(requests)} ({decided}).")
    verification = report["verification"]
    lines.append("Audit trail: " + ("verified, " if verification["ok"] else "NOT verified, ")
                 + verification["message"] + ".")
    lines.append("Alerts are advisory signs, not proof that the session was recorded.")
    return " ".join(lines)


def render_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON (same data as the HTML form)."""
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _session_ids(store: ReportStore) -> list[str]:
    ids: list[str] = []
    for item in store.sessions():
        if isinstance(item, str):
            ids.append(item)
        elif isinstance(item, Mapping):
            ids.append(str(item.get("session") or item.get("id")))
        else:
            ids.append(str(getattr(item, "session", getattr(item, "id", item))))
    return ids


def tuning(store: ReportStore, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """Per-rule counts of alerts raised in ``[since_ms, until_ms)`` and what clinicians did.

    Each row: ``rule, alerts, sessions, acknowledged, confirmed, false_positive, muted,
    unreviewed, false_positive_rate`` (false alarms over alerts with a verdict, ``None``
    without any; ``muted``: repeats of a false alarm, delivered without being announced),
    ``by_severity``. Sorted noisiest first (most false alarms, then most alerts).
    """
    rows: dict[str, dict[str, Any]] = {}
    for session in _session_ids(store):
        alert_rule: dict[str, str] = {}
        acked: set[str] = set()
        verdicts: dict[str, str] = {}
        for entry in store.entries(session):
            body = entry.get("body") or {}
            if not isinstance(body, Mapping):
                continue
            kind = entry.get("kind")
            at = _int(_get(body, "at"), _int(entry.get("at"), 0))
            if kind == "alert" and since_ms <= at < until_ms:
                rule = str(_get(body, "rule", default="unknown"))
                alert_id = str(_get(body, "id", default=""))
                alert_rule[alert_id] = rule
                row = rows.setdefault(rule, {
                    "rule": rule, "alerts": 0, "sessions": set(), "acknowledged": 0,
                    "confirmed": 0, "false_positive": 0, "muted": 0,
                    "by_severity": dict.fromkeys(SEVERITIES, 0)})
                row["alerts"] += 1
                row["muted"] += _get(body, "muted", default=False) is True
                row["sessions"].add(session)
                severity = str(_get(body, "severity", default="notice"))
                row["by_severity"][severity] = row["by_severity"].get(severity, 0) + 1
            elif kind == "ack":
                acked.add(str(_get(body, "id", "alert", default="")))
            elif kind == "feedback":
                verdicts[str(_get(body, "id", "alert", default=""))] = str(_get(body, "verdict"))
        for alert_id, rule in alert_rule.items():
            row = rows[rule]
            if alert_id in acked:
                row["acknowledged"] += 1
            verdict = verdicts.get(alert_id)
            if verdict == "confirmed":
                row["confirmed"] += 1
            elif verdict == "false_positive":
                row["false_positive"] += 1
    result: list[dict[str, Any]] = []
    for row in rows.values():
        reviewed = row["confirmed"] + row["false_positive"]
        result.append({
            **row,
            "sessions": len(row["sessions"]),
            "unreviewed": row["alerts"] - reviewed,
            "false_positive_rate": round(row["false_positive"] / reviewed, 3) if reviewed
            else None,
        })
    result.sort(key=lambda r: (-r["false_positive"], -r["alerts"], r["rule"]))
    return result


# --- evidence in plain words --------------------------------------------------------------

_PLAIN: dict[str, str] = {
    "client.display_capture": "A screen or tab capture was started inside the call page",
    "client.media_recorder": "A recorder was created inside the call page",
    "client.heartbeat": "The patient's app checked in",
    "client.virtual_device": "A virtual or loopback device is in use",
    "os.screenshot": "The patient's device reported a screenshot",
    "audio.shutter": "A camera-shutter or screenshot sound was heard",
    "audio.virtual_source": "The microphone has no natural background noise (virtual or "
                            "loopback source)",
    "video.extra_person": "The face detector found two or more faces",
    "video.no_person": "The face detector found no face in the picture",
    "video.obscured": "The camera was covered, black or uniform",
    "video.frozen": "The video showed the same frame",
    "video.loop": "Earlier video was replayed",
    "video.synthetic_source": "The video has no camera sensor noise (virtual camera or "
                              "screen content)",
}


def describe_evidence(signal: str, data: Mapping[str, Any] | None = None) -> str:
    """One piece of evidence as a plain sentence for a clinician (mirrors the panel's JS)."""
    data = data or {}
    if signal == "client.visibility":
        away = data.get("away_ms")
        if data.get("state") == "hidden":
            return "The patient switched away from the call tab"
        back = "The patient came back to the call tab"
        return f"{back} after {_duration(away)}" if isinstance(away, int) else back
    if signal == "client.focus":
        return ("The call window regained focus" if data.get("focused")
                else "The call window lost focus")
    if signal == "client.devices":
        devices = data.get("devices") or []
        labels = ", ".join(str(d.get("label") or d.get("kind") or "unnamed")
                           for d in devices if isinstance(d, Mapping))
        change = data.get("change")
        verb = {"added": "A device was connected", "removed": "A device was disconnected"}.get(
            str(change), "Devices present")
        return f"{verb}: {labels}" if labels else verb
    if signal == "client.virtual_device":
        return (f"A virtual or loopback device is in use: {data.get('label', '')}".rstrip(": ")
                if data.get("label") else _PLAIN[signal])
    if signal == "client.capture_stream":
        return f"A copy of a {data.get('element', 'media')} element's stream was taken in the page"
    if signal == "client.key":
        return f"The screenshot keys {data.get('combo', '')} were pressed".replace("  ", " ")
    if signal == "client.screens":
        return ("A second screen is connected" if data.get("extended")
                else "Only one screen is connected")
    if signal in ("client.fullscreen", "client.pip"):
        what = "Full screen" if signal == "client.fullscreen" else "Picture-in-picture"
        return f"{what} was turned {'on' if data.get('active') else 'off'}"
    if signal == "os.screen_capture":
        return ("The patient's device reported screen recording started" if data.get("active")
                else "The patient's device reported screen recording stopped")
    if signal in _PLAIN:
        return _PLAIN[signal]
    return signal or "unknown signal"


# --- HTML ---------------------------------------------------------------------------------

_SEVERITY_COLOUR = {"info": "#7b8a9a", "notice": "#4f7fa3", "warning": "#b0843a",
                    "critical": "#a05252"}
_VERDICT_WORDS = {"confirmed": "confirmed", "false_positive": "false alarm"}

_CSS = """
:root { color-scheme: light; --ink:#1f2933; --muted:#52606d; --line:#d9e2ec; --bg:#f7f9fb; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1000px; padding: 24px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.meta { color: var(--muted); margin: 0 0 16px; }
.verify { border-radius: 6px; padding: 10px 14px; border: 1px solid; margin: 12px 0; }
.verify.ok { background: #eef6f0; border-color: #9cc5a6; }
.verify.bad { background: #fbf1ee; border-color: #d3a595; }
.summary { background: var(--bg); border: 1px solid var(--line); border-radius: 6px;
           padding: 12px 14px; white-space: pre-wrap; user-select: all;
           overflow-wrap: anywhere; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px;
         border-bottom: 1px solid var(--line); overflow-wrap: anywhere; }
th { color: var(--muted); font-weight: 600; }
.sev { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
       font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
ul.ev { margin: 0; padding-left: 18px; }
svg { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
svg text { font: 12px system-ui, sans-serif; fill: var(--muted); }
.legend { color: var(--muted); font-size: 13px; }
.empty { color: var(--muted); font-style: italic; }
footer { margin-top: 32px; color: var(--muted); font-size: 13px; }
@media print { body { padding: 0; max-width: none; } tr, .verify, svg { break-inside: avoid; }
               .summary { user-select: text; } }
@page { margin: 16mm; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _clock(at: int, start: int) -> str:
    seconds = max(0, (at - start) // 1000)
    return f"+{seconds // 60:02d}:{seconds % 60:02d}"


def _timeline_svg(report: Mapping[str, Any]) -> str:
    """The SVG timeline: lanes for consent, signals, alerts, blind periods and feedback."""
    start, end = int(report["start"]), int(report["end"])
    span = max(end - start, 1000)
    left, width, lane_h, top = 110, 840, 34, 10
    lanes = ["Consent", "Signals", "Alerts", "Blind", "Feedback"]
    height = top + lane_h * len(lanes) + 34

    def x(at: int) -> float:
        return round(left + (min(max(at, start), start + span) - start) / span * width, 1)

    def y(lane: str) -> int:
        return top + lanes.index(lane) * lane_h + lane_h // 2

    out = [f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" role="img" '
           f'viewBox="0 0 {left + width + 20} {height}" '
           f'aria-label="Timeline of signals, alerts, consent changes, blind periods and '
           f'clinician feedback">',
           '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eef0f3"/>'
           '<line x1="0" y1="0" x2="0" y2="6" stroke="#b7bfc9" stroke-width="2"/>'
           '</pattern></defs>']
    for lane in lanes:
        out.append(f'<text x="8" y="{y(lane) + 4}">{lane}</text>'
                   f'<line x1="{left}" x2="{left + width}" y1="{y(lane)}" y2="{y(lane)}" '
                   f'stroke="#e4e9ef"/>')
    for period in report["blind_periods"]:
        x0, x1 = x(period["start"]), x(period["end"])
        reasons = "; ".join(period["reasons"]) or "no reason given"
        out.append(f'<rect class="blind" x="{x0}" y="{top}" width="{max(x1 - x0, 2)}" '
                   f'height="{lane_h * len(lanes)}" fill="url(#hatch)" opacity="0.55">'
                   f'<title>Blind {_clock(period["start"], start)}–{_clock(period["end"], start)}'
                   f': {_e(reasons)}</title></rect>')
        out.append(f'<rect x="{x0}" y="{y("Blind") - 7}" width="{max(x1 - x0, 2)}" height="14" '
                   f'fill="#8a96a3" rx="3"/>')
    for change in report["consent"]:
        cx, cy = x(change["at"]), y("Consent")
        scopes = ", ".join(change["monitoring"]) or "nothing"
        out.append(f'<path class="consent" d="M{cx} {cy - 7} L{cx + 7} {cy} L{cx} {cy + 7} '
                   f'L{cx - 7} {cy} Z" fill="#5b8c6e"><title>{_clock(change["at"], start)} '
                   f'consent: monitoring {_e(scopes)}; recording '
                   f'{_e(change["recording"])}</title></path>')
    for signal in report["signals"]:
        if signal["signal"] == "client.heartbeat":
            continue
        sx, sy = x(signal["at"]), y("Signals")
        out.append(f'<line class="signal" x1="{sx}" x2="{sx}" y1="{sy - 9}" y2="{sy + 9}" '
                   f'stroke="#6f8194" stroke-width="2"><title>{_clock(signal["at"], start)} '
                   f'{_e(signal["signal"])}: {_e(signal["description"])}</title></line>')
    for alert in report["alerts"]:
        ax, ay = x(alert["at"]), y("Alerts")
        colour = _SEVERITY_COLOUR.get(alert["severity"], "#7b8a9a")
        out.append(f'<circle class="alert" cx="{ax}" cy="{ay}" r="7" fill="{colour}" '
                   f'stroke="#fff" stroke-width="1.5"><title>{_clock(alert["at"], start)} '
                   f'{_e(alert["severity"])}: {_e(alert["title"] or alert["rule"])}'
                   f'</title></circle>')
    for ack in report["acks"]:
        fx, fy = x(ack["at"]), y("Feedback")
        out.append(f'<circle class="ack" cx="{fx}" cy="{fy}" r="5" fill="none" '
                   f'stroke="#4f7fa3" stroke-width="2"><title>{_clock(ack["at"], start)} '
                   f'alert acknowledged</title></circle>')
    for item in report["feedback"]:
        fx, fy = x(item["at"]), y("Feedback")
        word = _VERDICT_WORDS.get(str(item["verdict"]), str(item["verdict"]))
        mark = (f'M{fx - 5} {fy - 5} L{fx + 5} {fy + 5} M{fx + 5} {fy - 5} L{fx - 5} {fy + 5}'
                if item["verdict"] == "false_positive"
                else f'M{fx - 5} {fy} L{fx - 1} {fy + 5} L{fx + 6} {fy - 6}')
        out.append(f'<path class="feedback" d="{mark}" stroke="#3e4c59" stroke-width="2.2" '
                   f'fill="none"><title>{_clock(item["at"], start)} marked {_e(word)}'
                   f'</title></path>')
    axis_y = top + lane_h * len(lanes) + 4
    out.append(f'<line x1="{left}" x2="{left + width}" y1="{axis_y}" y2="{axis_y}" '
               f'stroke="#9aa5b1"/>')
    ticks = 6
    for i in range(ticks + 1):
        at = start + span * i // ticks
        tx = x(at)
        anchor = "start" if i == 0 else "end" if i == ticks else "middle"
        out.append(f'<line x1="{tx}" x2="{tx}" y1="{axis_y}" y2="{axis_y + 5}" '
                   f'stroke="#9aa5b1"/><text x="{tx}" y="{axis_y + 18}" '
                   f'text-anchor="{anchor}">{_clock(at, start)}</text>')
    out.append("</svg>")
    return "".join(out)


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one self-contained, printable HTML page (inline CSS and SVG only)."""
    start = int(report["start"])
    verification = report["verification"]
    alert_rows = []
    for alert in sorted(report["alerts"],
                        key=lambda a: (-SEVERITIES.index(a["severity"])
                                       if a["severity"] in SEVERITIES else 0, a["at"])):
        colour = _SEVERITY_COLOUR.get(alert["severity"], "#7b8a9a")
        evidence = "".join(f"<li>{_e(item.get('description'))} "
                           f"<small>({_clock(int(item.get('at') or start), start)})</small></li>"
                           for item in alert["evidence"])
        confidence = (f"{round(float(alert['confidence']) * 100)} %"
                      if isinstance(alert["confidence"], int | float) else "—")
        done = ["shown muted (a repeat of a false alarm)"] if alert["muted"] else []
        if alert["acknowledged_at"] is not None:
            done.append(f"acknowledged {_clock(alert['acknowledged_at'], start)}")
        if alert["verdict"]:
            done.append(f"marked {_VERDICT_WORDS.get(alert['verdict'], alert['verdict'])}")
        alert_rows.append([
            f"{_clock(alert['at'], start)}<br><small>{_e(format_ms(alert['at']))}</small>",
            f'<span class="sev" style="background:{colour}">{_e(alert["severity"])}</span>',
            f"<strong>{_e(alert['title'])}</strong><br>{_e(alert['message'])}"
            f"<br><small>rule {_e(alert['rule'])}</small>",
            f'<ul class="ev">{evidence}</ul>' if evidence else "—",
            confidence,
            _e(", ".join(done) or "no response recorded"),
        ])
    consent_rows = [[_clock(c["at"], start), _e(", ".join(c["monitoring"]) or "nothing"),
                     _e(str(c["recording"]).replace("_", " "))] for c in report["consent"]]
    blind_rows = [[_clock(p["start"], start), _clock(p["end"], start)
                   + (" (still blind at end)" if p.get("open") else ""),
                   _e(_duration(p["end"] - p["start"])), _e("; ".join(p["reasons"]))]
                  for p in report["blind_periods"]]
    limited_rows = [[_clock(p["start"], start), _clock(p["end"], start)
                     + (" (still limited at end)" if p.get("open") else ""),
                     _e(_duration(p["end"] - p["start"])), _e("; ".join(p["reasons"]))]
                    for p in report.get("limited_periods", [])]
    request_rows = [[_clock(r["at"], start), _e(r["reason"]), _e(r["decision"] or "undecided")]
                    for r in report["recording_requests"]]
    skip_rows = [[_clock(k["at"], start), _e(k["rule"]), _e(k["signal"]),
                  _e(", ".join(k["missing"]))] for k in report.get("skipped", [])]
    verify_class = "ok" if verification["ok"] else "bad"
    verify_text = ("Audit trail verified" if verification["ok"]
                   else "Audit trail does NOT verify — entries may have been edited or removed")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Session integrity report — {_e(report['session'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>Session integrity report</h1>",
        f'<p class="meta">Session <strong>{_e(report["session"])}</strong> · '
        f"{_e(format_ms(report['start']))} – {_e(format_ms(report['end']))} · "
        f"{report['counts']['entries']} audit entries</p></header>",
        f'<div id="verification" class="verify {verify_class}"><strong>{_e(verify_text)}'
        f"</strong>: {_e(verification['message'])}.</div>",
        "<h2>Summary for the session note</h2>",
        f'<p id="summary" class="summary">{_e(report["summary"])}</p>',
        "<h2>Timeline</h2>",
        _timeline_svg(report),
        '<p class="legend">Times are minutes:seconds from the first audit entry. '
        "Diamonds: consent changes · ticks: signals (heartbeats omitted) · circles: alerts "
        "(colour by severity) · shaded: monitoring blind · rings: acknowledged · "
        "✓ confirmed · ✕ false alarm.</p>",
        "<h2>Alerts</h2>",
        _table(["When", "Severity", "Alert", "Evidence", "Confidence", "Clinician"],
               alert_rows, "No alerts were raised."),
        *([] if not report.get("alert_limit") else [
            f'<p id="alert-limit" class="legend">At '
            f'{_clock(report["alert_limit"]["at"], start)} the session reached the limit of '
            f'{_e(report["alert_limit"]["limit"] or "its")} alerts: later alerts were not '
            "raised (their signals are still in the audit trail above).</p>"]),
        "<h2>Consent</h2>",
        _table(["When", "Monitoring", "Recording policy"], consent_rows,
               "No consent entries."),
        "<h2>Blind periods</h2>",
        _table(["From", "To", "Length", "Why"], blind_rows,
               "Monitoring was never reported blind."),
        "<h2>Limited periods</h2>",
        _table(["From", "To", "Length", "What could not be detected"], limited_rows,
               "Monitoring was never reported limited."),
        "<h2>Recording requests</h2>",
        _table(["When", "Reason", "Decision"], request_rows, "No recording requests."),
        "<h2>Not analysed for lack of consent</h2>",
        _table(["When", "Rule", "Signal", "Consent it needs"], skip_rows,
               "Every rule that had a signal could run under the consent given."),
        "<footer>Generated by sessionguard. Alerts are advisory signs with a stated confidence, "
        f"not proof that the session was recorded. {_e(_skips_sentence(report))}</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
