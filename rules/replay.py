"""Replay recorded wire messages through the engine (what ``sessionguard replay`` runs).

Pure: takes the lines, yields CONTRACT alert messages. Lines are JSON objects:

- ``{"type": "signal", "signal": NAME, "at": MS, "data": {...}, "session"?: S, "participant"?: P}``
- ``{"type": "signals", "items": [...]}`` — a batch of the above
- ``{"type": "consent.set", "at": MS, "recording"?: POLICY, "monitoring"?: [...], "session"?: S}``
- ``{"type": "tick", "at": MS}`` — let holds and absences fire up to that time (an extension)

Blank lines and lines starting with ``#`` are ignored. The engine is ticked to each line's
time before the line is fed, so holds fire in order (every session's, as the server's
once-a-second tick does). As on the live channel, a signal whose ``seq`` its participant
already sent (a resend) is not counted again, and a media signal's evidence confidence is
its ``data.confidence``. Same input, same output.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

from rules.engine import REPLAY_DEFAULT_CONSENT, Engine
from rules.model import Alert
from rules.ruleset import Ruleset
from signals.catalog import CATALOGUE, make_signal
from signals.consent import Consent
from signals.errors import InvalidSignal, SessionguardError

__all__ = ["ReplayError", "media_confidence", "replay"]

DEFAULT_SESSION = "replay"
DEFAULT_PARTICIPANT = "patient"


class ReplayError(SessionguardError):
    """A line of the replay input is malformed; ``line`` is its 1-based number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def _name(item: dict[str, Any], key: str, default: str, n: int) -> str:
    value = item.get(key, default)
    if not isinstance(value, str) or not value:
        raise ReplayError(n, f"'{key}' must be a non-empty string")
    return value


def media_confidence(name: str, data: Any) -> float:
    """A media signal's confidence, as the live sidecar gives it (the detector's, carried
    in ``data.confidence``); 1.0 for the others."""
    spec = CATALOGUE.get(name)
    if spec is None or "media" not in spec.origins or not isinstance(data, dict):
        return 1.0
    value = data.get("confidence")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return 1.0  # validate_data refuses a bad one with a clear sentence
    return float(value)


def _at(obj: dict[str, Any], n: int) -> int:
    at = obj.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ReplayError(n, "'at' must be a time in epoch milliseconds (a finite number)")
    return int(at)


def replay(lines: Iterable[str], ruleset: Ruleset, consent: Consent | None = None,
           engine: Engine | None = None) -> Iterator[dict[str, Any]]:
    """Yield one alert message (the CONTRACT shape, per-session ``seq``) per alert."""
    base = consent if consent is not None else REPLAY_DEFAULT_CONSENT
    eng = engine or Engine(ruleset, default_consent=base)
    seqs: dict[str, int] = {}
    current: dict[str, Consent] = {}
    sent: set[tuple[str, str, int]] = set()  # (session, participant, seq) already fed

    def out(alerts: Iterable[Alert]) -> Iterator[dict[str, Any]]:
        for a in alerts:
            seqs[a.session] = seqs.get(a.session, 0) + 1
            yield a.to_wire(seqs[a.session])

    for n, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReplayError(n, f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ReplayError(n, "expected a JSON object")
        kind = obj.get("type")
        if kind == "signals":
            items = obj.get("items")
            if not isinstance(items, list):
                raise ReplayError(n, "'items' must be a list of signals")
        elif kind == "signal":
            items = [obj]
        elif kind in ("consent.set", "tick"):
            at = _at(obj, n)
            yield from out(eng.tick(at).alerts)
            if kind == "tick":
                continue
            sid = _name(obj, "session", DEFAULT_SESSION, n)
            prev = current.get(sid, base)
            claim = {"monitoring": obj.get("monitoring", sorted(prev.monitoring)),
                     "recording": obj.get("recording", prev.recording)}
            try:
                c = Consent.parse(claim)
            except InvalidSignal as exc:
                raise ReplayError(n, str(exc)) from None
            current[sid] = c
            eng.set_consent(sid, c, at)
            continue
        else:
            raise ReplayError(
                n, f"unknown message type {kind!r} (signal, signals, consent.set, tick)")
        for item in items:
            if not isinstance(item, dict):
                raise ReplayError(n, "a signal must be a JSON object")
            at = _at(item, n)
            name = item.get("signal")
            if not isinstance(name, str):
                raise ReplayError(n, "'signal' must be a signal name")
            session = _name(item, "session", DEFAULT_SESSION, n)
            participant = _name(item, "participant", DEFAULT_PARTICIPANT, n)
            data = item.get("data", {})
            try:
                sig = make_signal(name, at, data, session=session, participant=participant,
                                  confidence=media_confidence(name, data))
            except InvalidSignal as exc:
                raise ReplayError(n, str(exc)) from None
            seq = item.get("seq")
            if isinstance(seq, int) and not isinstance(seq, bool):
                if (session, participant, seq) in sent:
                    continue  # a resend: acknowledged live, not counted twice
                sent.add((session, participant, seq))
            yield from out(eng.tick(at).alerts)
            yield from out(eng.feed(sig, at).alerts)
