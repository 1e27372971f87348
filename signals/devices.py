"""Classify device labels: turn ``client.devices`` into ``client.virtual_device`` signals.

The list of known virtual, loopback and capture drivers lives in
``config/virtual_devices.yaml``. Labels can be renamed or faked, so a match says only
*what matched* (the product and the pattern), never that a device certainly is that product;
the derived signal carries the entry's confidence. Pure: the caller reads the file, or uses
:func:`default_classifier` which reads the packaged list once.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config import CONFIG_DIR
from signals.errors import ConfigError
from signals.model import Signal
from signals.schema import first_error
from signals.yaml_errors import describe_yaml_error, load_yaml

__all__ = [
    "CATEGORIES",
    "DEFAULT_DEVICE_LIST",
    "DeviceClassifier",
    "DeviceMatch",
    "default_classifier",
    "derive_virtual_devices",
]

Category = Literal["loopback_audio", "virtual_camera", "face_swap", "capture_tool", "legitimate"]
Kind = Literal["audioinput", "audiooutput", "videoinput"]
CATEGORIES: tuple[str, ...] = (
    "loopback_audio", "virtual_camera", "face_swap", "capture_tool", "legitimate")
DEFAULT_DEVICE_LIST: Path = CONFIG_DIR / "virtual_devices.yaml"


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    match: str = Field(min_length=1)
    pattern: str = Field(min_length=1)
    category: Category
    kinds: list[Kind] = ["audioinput", "audiooutput", "videoinput"]
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    note: str = ""


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[_Entry]


@dataclass(frozen=True, slots=True)
class DeviceMatch:
    """A label matched entry ``match`` (a product name) of the list."""

    match: str
    category: str
    confidence: float
    pattern: str


@dataclass(frozen=True, slots=True)
class _Compiled:
    entry: DeviceMatch
    regex: re.Pattern[str]
    kinds: frozenset[str]


class DeviceClassifier:
    """Matches device labels (case-insensitive regular expressions, first match wins)."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        try:
            parsed = _File.model_validate({"devices": entries})
        except ValidationError as exc:
            raise ConfigError(f"device list: {first_error(exc, 'devices')}") from exc
        self._entries: list[_Compiled] = []
        for e in parsed.devices:
            try:
                regex = re.compile(e.pattern, re.IGNORECASE)
            except re.error as exc:
                raise ConfigError(f"device list: entry {e.match!r}: bad pattern: {exc}") from exc
            match = DeviceMatch(e.match, e.category, e.confidence, e.pattern)
            self._entries.append(_Compiled(match, regex, frozenset(e.kinds)))
        self._cache: dict[tuple[str, str], DeviceMatch | None] = {}

    @classmethod
    def from_yaml(cls, text: str, name: str = "device list") -> DeviceClassifier:
        try:
            doc = load_yaml(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{name}: not valid YAML ({describe_yaml_error(exc)})") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
            raise ConfigError(f"{name}: expected a mapping with a 'devices' list")
        return cls(doc["devices"])

    @property
    def products(self) -> list[str]:
        return [c.entry.match for c in self._entries]

    def classify(self, label: str, kind: str) -> DeviceMatch | None:
        """The first entry whose pattern matches ``label`` for this ``kind``, or ``None``."""
        key = (kind, label)
        if key in self._cache:
            return self._cache[key]
        found = None
        for c in self._entries:
            if kind in c.kinds and c.regex.search(label):
                found = c.entry
                break
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = found
        return found


@functools.cache
def default_classifier() -> DeviceClassifier:
    """The classifier of the packaged ``config/virtual_devices.yaml`` (read once)."""
    return DeviceClassifier.from_yaml(DEFAULT_DEVICE_LIST.read_text(encoding="utf-8"),
                                      str(DEFAULT_DEVICE_LIST))


def derive_virtual_devices(signal: Signal,
                           classifier: DeviceClassifier | None = None) -> list[Signal]:
    """The ``client.virtual_device`` signals implied by one ``client.devices`` signal.

    Removed devices derive nothing. Each derived signal keeps the session, participant and
    time of its source; ``data`` is ``{kind, label, match, category}``; ``source`` is
    ``sidecar``; its confidence is the list entry's.
    """
    if signal.name != "client.devices" or signal.data.get("change") == "removed":
        return []
    clf = classifier or default_classifier()
    out: list[Signal] = []
    seen: set[tuple[str, str]] = set()
    for dev in signal.data.get("devices", ()):
        kind, label = str(dev.get("kind", "")), str(dev.get("label", ""))
        if (kind, label) in seen:
            continue
        seen.add((kind, label))
        m = clf.classify(label, kind)
        if m is None:
            continue
        out.append(Signal(name="client.virtual_device", at=signal.at,
                          data={"kind": kind, "label": label, "match": m.match,
                                "category": m.category},
                          session=signal.session, participant=signal.participant,
                          source="sidecar", confidence=m.confidence * signal.confidence))
    return out
