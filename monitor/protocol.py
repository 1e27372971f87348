"""The wire protocol without I/O: text frames in, typed messages out.

:func:`parse_message` turns one frame into one of the pydantic message models below, or
raises :class:`~signals.errors.InvalidSignal` whose ``code`` is one of :data:`ERROR_CODES`.
It never raises anything else, whatever the input (the tests fuzz it with hypothesis).
:func:`to_signal` checks one ``signal`` item against the catalogue, the patient's allowed
origins and the consent in force. The server only adapts sockets to these functions.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
)

from signals.catalog import CATALOGUE, validate_data
from signals.consent import RecordingPolicy
from signals.errors import InvalidSignal
from signals.model import Signal, Source
from signals.schema import first_error

__all__ = [
    "CLINICIAN_TYPES",
    "ERROR_CODES",
    "PATIENT_ORIGINS",
    "PATIENT_TYPES",
    "AlertAck",
    "AlertFeedback",
    "ClientMessage",
    "ConsentSet",
    "RecordingDecision",
    "RecordingRequest",
    "Resume",
    "Role",
    "SignalItem",
    "SignalsBatch",
    "WebrtcOffer",
    "error_message",
    "parse_message",
    "to_signal",
]

Role = Literal["patient", "clinician"]

#: Every ``code`` an ``error`` message or an :class:`InvalidSignal` from this module carries.
ERROR_CODES = (
    "too_large",       # the frame is bigger than the limit
    "binary",          # a binary frame: the protocol is JSON text
    "bad_json",        # not UTF-8 JSON
    "not_object",      # JSON, but not an object with a string "type"
    "unknown_type",    # no such message type
    "forbidden",       # a message type the token's role may not send
    "bad_field",       # a field is missing, of the wrong type or out of range
    "unknown_signal",  # a signal name not in the catalogue
    "bad_origin",      # a signal a patient channel may not send (media / sidecar ones)
)

#: Sources a patient's channel may claim: everything else is derived inside the sidecar.
PATIENT_ORIGINS = frozenset({"client", "os"})

_Id = Annotated[str, Field(min_length=1, max_length=128)]
_Ms = Annotated[StrictInt, Field(ge=0, le=2**53)]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class SignalItem(_Msg):
    """``{"type":"signal","seq":N,"signal":NAME,"at":EPOCH_MS,"data":{...}}``"""

    type: Literal["signal"] = "signal"
    seq: Annotated[StrictInt, Field(ge=0, le=2**53)]
    signal: Annotated[str, Field(min_length=1, max_length=64)]
    at: Annotated[StrictInt | StrictFloat, Field(ge=0, le=2**53)]
    data: dict[str, Any] = Field(default_factory=dict)


class SignalsBatch(_Msg):
    """``{"type":"signals","items":[signal, ...]}``. Items that are not signals (a string
    ``at``, ``data`` that is no object) do not sink the batch: they are left out of
    ``items`` and listed in :attr:`rejected`, each with its ``seq`` when it has a usable one."""

    type: Literal["signals"]
    items: list[SignalItem]
    _rejected: list[InvalidSignal] = PrivateAttr(default_factory=list)

    @property
    def rejected(self) -> list[InvalidSignal]:
        return self._rejected


class WebrtcOffer(_Msg):
    type: Literal["webrtc.offer"]
    sdp: Annotated[str, Field(min_length=1, max_length=60_000)]


class RecordingRequest(_Msg):
    """``id`` (an extension): the request's id, chosen by the page (8-64 characters of
    ``[A-Za-z0-9_-]``; the sidecar replaces one it cannot use and says so in its ``ok``) or
    given by the sidecar earlier. A page back after a disconnection asks again with it and,
    if a clinician decided meanwhile, gets the decision instead of a new request."""

    type: Literal["recording.request"]
    reason: Annotated[str, Field(max_length=500)] = ""
    id: _Id | None = None


class AlertAck(_Msg):
    type: Literal["alert.ack"]
    id: _Id


class AlertFeedback(_Msg):
    type: Literal["alert.feedback"]
    id: _Id
    verdict: Literal["confirmed", "false_positive"]
    note: Annotated[str, Field(max_length=500)] = ""


class ConsentSet(_Msg):
    """``{"type":"consent.set","recording":POLICY}``: the recording policy only. One that
    carries ``monitoring`` is refused (see :data:`_REFUSED_FIELDS`)."""

    type: Literal["consent.set"]
    recording: RecordingPolicy


class Resume(_Msg):
    type: Literal["resume"]
    after: _Ms = 0


class RecordingDecision(_Msg):
    type: Literal["recording.decision"]
    id: _Id
    approve: StrictBool


ClientMessage = (
    SignalItem | SignalsBatch | WebrtcOffer | RecordingRequest
    | AlertAck | AlertFeedback | ConsentSet | Resume | RecordingDecision
)

PATIENT_TYPES: dict[str, type[_Msg]] = {
    "signal": SignalItem,
    "signals": SignalsBatch,
    "webrtc.offer": WebrtcOffer,
    "recording.request": RecordingRequest,
}
CLINICIAN_TYPES: dict[str, type[_Msg]] = {
    "alert.ack": AlertAck,
    "alert.feedback": AlertFeedback,
    "consent.set": ConsentSet,
    "resume": Resume,
    "recording.decision": RecordingDecision,
}
_BY_ROLE: dict[str, dict[str, type[_Msg]]] = {
    "patient": PATIENT_TYPES,
    "clinician": CLINICIAN_TYPES,
}

#: Fields a message type cannot act on although a sender could believe it does: refused with
#: ``bad_field`` and these words (other unknown fields are ignored, for newer clients).
_REFUSED_FIELDS: dict[str, dict[str, str]] = {
    "consent.set": {
        "monitoring": "consent.set changes only the recording policy; nothing was changed. "
                      "The monitoring scopes come from the patient's token: narrowing them "
                      "means the platform minting a new patient token without the scope "
                      "(the session keeps only the scopes every patient token granted)",
    },
}


def _first_error(exc: ValidationError) -> str:
    return first_error(exc, "message")


def _usable_seq(value: Any) -> int | None:
    """``value`` if it is a ``seq`` the sidecar could acknowledge, else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53:
        return value
    return None


def _signal_problem(raw: Any, where: str) -> InvalidSignal | None:
    """Why ``raw`` is not a signal item (its ``seq`` kept when usable), or ``None``."""
    try:
        SignalItem.model_validate(raw)
    except ValidationError as exc:
        seq = _usable_seq(raw.get("seq")) if isinstance(raw, dict) else None
        return InvalidSignal(f"{where}: {_first_error(exc)}", "bad_field", seq=seq)
    except (RecursionError, ValueError, TypeError):
        return InvalidSignal(f"{where}: invalid signal", "bad_field")
    return None


def _batch(raw: dict[str, Any]) -> SignalsBatch:
    """A ``signals`` batch whose items are a list: the good ones in ``items``, the others in
    ``rejected`` (one bad item must not keep a resend's other signals from being stored)."""
    good: list[Any] = []
    rejected: list[InvalidSignal] = []
    for k, item in enumerate(raw["items"]):
        problem = _signal_problem(item, f"signals: items.{k}")
        if problem is None:
            good.append(item)
        else:
            rejected.append(problem)
    batch = SignalsBatch.model_validate({"type": "signals", "items": good})
    batch._rejected = rejected
    return batch


#: how a ``signal`` item begins, with or without JSON's optional whitespace: the SDK writes
#: ``{"type":"signal",`` and other clients (Python's json.dumps, pretty printers) add spaces
_SIGNAL_START = re.compile(r'\{[ \t\n\r]*"type"[ \t\n\r]*:[ \t\n\r]*"signal"[ \t\n\r]*,')


def parse_message(
    frame: str | bytes, role: Role, *, max_bytes: int = 65536, max_batch: int = 100
) -> ClientMessage:
    """Parse one WebSocket frame sent by a participant of ``role``.

    Raises :class:`InvalidSignal` (and nothing else) with a code from :data:`ERROR_CODES`.
    """
    if isinstance(frame, bytes | bytearray | memoryview):
        raise InvalidSignal("binary frames are not accepted; send JSON text", "binary")
    if not isinstance(frame, str):
        raise InvalidSignal("a frame must be JSON text", "bad_json")
    if len(frame) > max_bytes or len(frame.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidSignal(f"message larger than {max_bytes} bytes", "too_large")
    if role == "patient" and _SIGNAL_START.match(frame):
        # The common case, one signal item (its type first, as the SDK and most clients
        # write it, with or without spaces): parsed and validated in
        # one pass by pydantic's own JSON reader, about half the CPU of json.loads followed
        # by validation. It accepts exactly what the path below accepts, with the same values
        # (property-tested); anything it refuses goes that way, which says what is wrong.
        try:
            return SignalItem.model_validate_json(frame)
        except (ValidationError, ValueError, RecursionError):
            pass
    try:
        raw = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise InvalidSignal("message is not valid JSON", "bad_json") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise InvalidSignal('a message is a JSON object with a string "type"', "not_object")
    kind = raw["type"]
    model = _BY_ROLE[role].get(kind)
    if model is None:
        other = "clinician" if role == "patient" else "patient"
        if kind in _BY_ROLE[other]:
            raise InvalidSignal(f"a {role} may not send {kind!r} messages", "forbidden")
        raise InvalidSignal(f"unknown message type {kind[:40]!r}", "unknown_type")
    for field, why in _REFUSED_FIELDS.get(kind, {}).items():
        if field in raw:
            raise InvalidSignal(f"{kind}: {field}: {why}", "bad_field")
    if model is SignalsBatch:
        items = raw.get("items")
        if isinstance(items, list) and len(items) > max_batch:
            raise InvalidSignal(f"a batch carries at most {max_batch} items", "too_large")
    try:
        message: ClientMessage = model.model_validate(raw)  # type: ignore[assignment]
    except ValidationError as exc:
        if model is SignalsBatch and isinstance(raw.get("items"), list):
            return _batch(raw)
        seq = _usable_seq(raw.get("seq")) if model is SignalItem else None
        raise InvalidSignal(f"{kind}: {_first_error(exc)}", "bad_field", seq=seq) from exc
    except (RecursionError, ValueError, TypeError) as exc:
        raise InvalidSignal(f"{kind}: invalid message", "bad_field") from exc
    return message


def to_signal(
    item: SignalItem,
    *,
    session: str,
    participant: str,
    now: int,
    clock_skew_ms: int = 300_000,
    clock_offset_ms: int = 0,
) -> Signal:
    """Check one patient signal against the catalogue and build the :class:`Signal`.

    ``at`` is moved by ``clock_offset_ms`` (how far the patient's clock is behind the
    sidecar's: :class:`signals.clock.ClockOffset`), then re-stamped with ``now`` when it is
    still further than ``clock_skew_ms`` from the sidecar's clock (a patient's clock cannot
    move an event out of the rules' windows). Consent is not checked here: see
    :func:`in_scope` of the session.
    """
    spec = CATALOGUE.get(item.signal)
    if spec is None:
        raise InvalidSignal(f"unknown signal {item.signal[:64]!r}", "unknown_signal")
    if not spec.origins & PATIENT_ORIGINS:
        raise InvalidSignal(f"{item.signal} is derived by the sidecar; a client may not send it",
                            "bad_origin")
    try:
        data = validate_data(item.signal, item.data)
    except InvalidSignal:
        raise
    except Exception as exc:  # pragma: no cover - defensive: schema code must not crash us
        raise InvalidSignal(f"{item.signal}: invalid data", "bad_field") from exc
    at = int(item.at) + clock_offset_ms
    if abs(at - now) > clock_skew_ms:
        at = now
    source: Source = "os" if "os" in spec.origins else "client"
    return Signal(
        name=item.signal, at=at, data=data, session=session, participant=participant,
        source=source, confidence=1.0, seq=item.seq,
    )


def error_message(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The ``{"type":"error","code","message"}`` reply."""
    return {"type": "error", "code": code, "message": message, **extra}
