"""The catalogue of signals of CONTRACT.md: each name, its consent scope, where it may come
from, and the schema of its ``data`` (pydantic models, checked at the boundary).

Schemas list what a signal carries *at least*: extra keys are kept, so a newer SDK can add
fields without breaking an older sidecar.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from signals.consent import Scope
from signals.errors import InvalidSignal
from signals.model import Signal, Source
from signals.schema import first_error

__all__ = [
    "CATALOGUE",
    "SignalSpec",
    "make_signal",
    "signal_names",
    "spec_for",
    "validate_data",
]


class _Data(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Empty(_Data):
    pass


class Heartbeat(_Data):
    """``dropped`` (optional): signals the client had to discard since its previous heartbeat
    that carried a count (its offline queue was full); the record has a gap of that many."""

    dropped: int | None = Field(default=None, ge=0, le=2**53)


class Visibility(_Data):
    state: Literal["hidden", "visible"]
    away_ms: int | None = Field(default=None, ge=0)


class Focus(_Data):
    focused: bool
    away_ms: int | None = Field(default=None, ge=0)


class Device(_Data):
    kind: Literal["audioinput", "audiooutput", "videoinput"]
    label: str = Field(max_length=256)
    id: str = Field(max_length=128)


class Devices(_Data):
    change: Literal["initial", "added", "removed"]
    devices: list[Device] = Field(max_length=64)


class VirtualDevice(_Data):
    kind: Literal["audioinput", "audiooutput", "videoinput"]
    label: str = Field(max_length=256)
    match: str
    category: str | None = None


class DisplayCapture(_Data):
    api: str = Field(max_length=64)


class CaptureStream(_Data):
    element: Literal["video", "audio", "canvas"]


class Key(_Data):
    combo: str = Field(min_length=1, max_length=64)


class Screens(_Data):
    extended: bool


class Active(_Data):
    active: bool


class OsScreenCapture(_Data):
    active: bool
    api: str = Field(max_length=128)


class OsScreenshot(_Data):
    api: str = Field(max_length=128)


class MediaDetection(_Data):
    """Media signals: what the detector saw. All fields optional; detectors add their own."""

    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    duration_s: float | None = Field(default=None, ge=0.0)


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One catalogue entry. ``origins`` are the sources allowed to emit it: a patient's
    channel may send only ``client`` and ``os`` signals; ``media`` and ``sidecar`` ones are
    derived inside the sidecar."""

    name: str
    scope: Scope
    origins: frozenset[Source]
    model: type[_Data]
    summary: str


def _spec(name: str, scope: Scope, origin: Source, model: type[_Data], summary: str) -> SignalSpec:
    return SignalSpec(name, scope, frozenset({origin}), model, summary)


CATALOGUE: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        _spec(
            "client.visibility", "device", "client", Visibility, "the call page was hidden or shown"
        ),
        _spec("client.focus", "device", "client", Focus, "the call window lost or regained focus"),
        _spec(
            "client.devices", "device", "client", Devices, "audio/video devices listed or changed"
        ),
        _spec(
            "client.virtual_device",
            "device",
            "sidecar",
            VirtualDevice,
            "a device label matches a known virtual, loopback or capture driver",
        ),
        _spec(
            "client.display_capture",
            "device",
            "client",
            DisplayCapture,
            "a screen or tab capture started inside the page",
        ),
        _spec(
            "client.media_recorder",
            "device",
            "client",
            Empty,
            "a MediaRecorder was created inside the page",
        ),
        _spec(
            "client.capture_stream",
            "device",
            "client",
            CaptureStream,
            "captureStream() was called on a page element",
        ),
        _spec(
            "client.key", "device", "client", Key, "a screenshot key combination reached the page"
        ),
        _spec(
            "client.screens", "device", "client", Screens, "an extra screen was attached or removed"
        ),
        _spec(
            "client.fullscreen",
            "device",
            "client",
            Active,
            "the call page entered or left fullscreen",
        ),
        _spec("client.pip", "device", "client", Active, "picture-in-picture started or stopped"),
        _spec(
            "client.heartbeat",
            "device",
            "client",
            Heartbeat,
            "the SDK is alive (and how many signals it had to drop, if any)",
        ),
        _spec(
            "os.screen_capture",
            "device",
            "os",
            OsScreenCapture,
            "the operating system reports the screen is being captured or mirrored",
        ),
        _spec(
            "os.screenshot",
            "device",
            "os",
            OsScreenshot,
            "the operating system reports a screenshot",
        ),
        _spec(
            "audio.shutter",
            "audio",
            "media",
            MediaDetection,
            "a camera-shutter or screenshot sound in the microphone",
        ),
        _spec(
            "audio.virtual_source",
            "audio",
            "media",
            MediaDetection,
            "the microphone has no acoustic noise floor",
        ),
        _spec(
            "video.extra_person",
            "video",
            "media",
            MediaDetection,
            "two or more faces for at least 2 s",
        ),
        _spec("video.no_person", "video", "media", MediaDetection, "no face seen for at least 3 s"),
        _spec(
            "video.obscured",
            "video",
            "media",
            MediaDetection,
            "camera covered, black or uniform for at least 2 s",
        ),
        _spec("video.frozen", "video", "media", MediaDetection, "the same frame for at least 3 s"),
        _spec(
            "video.loop",
            "video",
            "media",
            MediaDetection,
            "earlier video replayed for at least 2 s",
        ),
        _spec(
            "video.synthetic_source",
            "video",
            "media",
            MediaDetection,
            "no camera sensor noise: a virtual camera or screen content",
        ),
        _spec(
            "video.phone",
            "video",
            "media",
            MediaDetection,
            "an object detector (optional model) saw a phone held toward the camera",
        ),
    )
}


def signal_names() -> list[str]:
    return list(CATALOGUE)


def spec_for(name: str) -> SignalSpec:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise InvalidSignal(f"unknown signal {name!r}", "unknown_signal") from None


def validate_data(name: str, data: Any) -> dict[str, Any]:
    """Check ``data`` against the schema of signal ``name``; return it normalised."""
    spec = spec_for(name)
    if not isinstance(data, dict):
        raise InvalidSignal(f"{name}: data must be a JSON object, not {type(data).__name__}",
                            "bad_field")
    try:
        model = spec.model.model_validate(data)
    except ValidationError as exc:
        raise InvalidSignal(f"{name}: data.{first_error(exc, 'data')}", "bad_field") from exc
    return model.model_dump(exclude_none=True)


def make_signal(
    name: str,
    at: int,
    data: Any,
    *,
    session: str = "default",
    participant: str = "patient",
    source: Source | None = None,
    confidence: float = 1.0,
    seq: int | None = None,
) -> Signal:
    """Validate and build a :class:`Signal`; ``source`` defaults to the spec's origin."""
    spec = spec_for(name)
    origin: Source = source if source is not None else next(iter(spec.origins))
    return Signal(
        name=name,
        at=int(at),
        data=validate_data(name, data if data is not None else {}),
        session=session,
        participant=participant,
        source=origin,
        confidence=confidence,
        seq=seq,
    )
