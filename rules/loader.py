"""Load and validate rule files (YAML): ``load_rules`` and ``check_rules``.

A rule file holds optional ``lists`` and ``macros`` and a list of ``rules``; files are read
in the order given (a directory: its ``*.yaml`` files sorted by name), and lists and macros
of earlier files are visible in later ones. Every problem becomes a :class:`Diagnostic`
naming the file, the rule id and what is wrong; ``load_rules`` raises ``RuleError`` when
any of them is an error.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import rule_engine
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config import DEFAULT_RULES_DIR
from rules.durations import parse_duration_ms
from rules.model import Diagnostic, Severity
from rules.predicates import Predicate, context_types, expand
from rules.ruleset import CompiledRule, Ruleset, Step
from signals.catalog import CATALOGUE
from signals.errors import RuleError
from signals.yaml_errors import describe_yaml_error, load_yaml, not_utf8

__all__ = ["check_rules", "load_rules", "rule_files"]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
# ``bool`` first: pydantic would otherwise read YAML's ``true`` / ``yes`` / ``on`` as the number
# 1 (one second); kept as a bool, ``parse_duration_ms`` refuses it with a clear sentence
Duration = bool | str | int | float
#: names a list or macro may not take: rule-engine's own words (``in``, ``not`` ...)
_RESERVED = frozenset(rule_engine.parser.Parser.reserved_words)
#: template names every message may use, besides the data fields of the rule's signals
TEMPLATE_META = frozenset({"signal", "count", "distinct", "duration", "within", "recording",
                           "source", "signal_confidence"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _StepSpec(_Model):
    signal: str
    when: str | None = None


class _CountSpec(_Model):
    n: int = Field(ge=1, le=1000)
    within: Duration


class _DistinctSpec(_Model):
    field: str
    n: int = Field(ge=2, le=1000)
    within: Duration


class _StepsSpec(_Model):
    steps: list[_StepSpec] = Field(min_length=2, max_length=16)
    within: Duration


class _ExceptionSpec(_Model):
    name: str
    when: str
    reason: str = ""


class _InhibitSpec(_Model):
    tags: list[str] = Field(min_length=1)
    for_: Duration = Field(alias="for")


class _RuleSpec(_Model):
    id: str
    title: str = Field(min_length=1, max_length=120)
    description: str = ""
    tags: list[str] = []
    signals: list[str] = []
    when: str | None = None
    exceptions: list[_ExceptionSpec] = []
    requires: list[Literal["device", "audio", "video"]] | None = None
    severity: Literal["info", "notice", "warning", "critical"]
    capture: bool = False
    agreed_message: str | None = None
    group_by: Literal["participant", "session"] = "participant"
    hold: Duration | None = None
    absent: Duration | None = None
    count: _CountSpec | None = None
    distinct: _DistinctSpec | None = None
    sequence: _StepsSpec | None = None
    all_of: _StepsSpec | None = None
    confidence: float = Field(default=0.8, ge=0.0, le=1.0)
    message: str = Field(min_length=1)
    suggested_response: list[str] = []
    #: used instead of suggested_response while recording is agreed (capture rules)
    agreed_suggested_response: list[str] | None = None
    cooldown: Duration = "5m"
    max_per_session: int = Field(default=10, ge=1, le=10_000)
    fingerprint: list[str] = []
    inhibits: _InhibitSpec | None = None
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id_ok(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("an id is lower-case letters, digits, '.', '_' or '-'")
        return v


class _FileSpec(_Model):
    lists: dict[str, list[str | int | float | bool]] = {}
    macros: dict[str, str] = {}
    rules: list[dict[str, Any]] = []


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """The files to read, in order: a directory contributes its ``*.yaml``/``*.yml`` sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml")))
        else:
            out.append(p)
    return out


def _pyd_message(exc: ValidationError) -> list[str]:
    msgs = []
    for err in exc.errors():
        path = err["loc"]
        loc = ".".join(str(p) for p in path)
        if err["type"] == "extra_forbidden":
            msgs.append(f"unknown key {loc!r}")
        elif err["type"] == "missing":
            msgs.append(f"missing key {loc!r}")
        elif not path:
            msgs.append("a rule file is a mapping with the keys lists, macros and rules")
        elif path[-1] == "[key]":
            # ``true:`` or ``null:`` as a list or macro name: YAML reads it as another type
            msgs.append(f"{path[0]}: a name is not a string (YAML reads true, yes, on, null "
                        "and numbers as other types: quote the names)")
        else:
            msgs.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return msgs


class _Loader:
    def __init__(self) -> None:
        self.diagnostics: list[Diagnostic] = []
        self.rules: list[CompiledRule] = []
        self.lists: dict[str, list[Any]] = {}
        self.macros: dict[str, str] = {}
        self.ids: set[str] = set()

    def error(self, file: str, rule: str | None, message: str) -> None:
        self.diagnostics.append(Diagnostic("error", file, rule, message))

    def warn(self, file: str, rule: str | None, message: str) -> None:
        self.diagnostics.append(Diagnostic("warning", file, rule, message))

    def load_file(self, path: Path) -> None:
        file = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            self.error(file, None, f"cannot read the file: {exc.strerror or exc}")
            return
        except UnicodeDecodeError as exc:
            self.error(file, None, not_utf8("the file", exc))
            return
        try:
            doc = load_yaml(text)
        except yaml.YAMLError as exc:
            self.error(file, None, f"not valid YAML ({describe_yaml_error(exc)})")
            return
        if doc is None:
            self.warn(file, None, "the file is empty")
            return
        try:
            spec = _FileSpec.model_validate(doc)
        except ValidationError as exc:
            for msg in _pyd_message(exc):
                self.error(file, None, msg)
            return
        for name, values in spec.lists.items():
            if not _ID.match(name.replace("_", "-")) or name in CATALOGUE or name in _RESERVED:
                self.error(file, None, f"bad list name {name!r}")
                continue
            self.lists[name] = list(values)
        for name, body in spec.macros.items():
            if not _ID.match(name.replace("_", "-")) or name in _RESERVED:
                # a macro named ``not`` or ``in`` would rewrite every condition's operators
                self.error(file, None, f"bad macro name {name!r} (letters, digits and _; "
                                       f"not one of {', '.join(sorted(_RESERVED))})")
                continue
            if name in self.lists:
                self.error(file, None, f"macro {name!r} has the name of a list")
            self.macros[name] = body
        for i, raw in enumerate(spec.rules):
            self.load_rule(file, i, raw)

    def compile(self, file: str, rid: str, text: str, signals: Sequence[str],
                what: str) -> Predicate | None:
        symbols = context_types(signals)
        for name in (*self.lists, *self.macros):
            if name in symbols:
                self.error(file, rid, f"list or macro {name!r} hides a field of the same name")
        try:
            return Predicate(expand(text, self.lists, self.macros), symbols)
        except rule_engine.errors.SymbolResolutionError as exc:
            self.error(file, rid, f"{what}: unknown field {exc.symbol_name!r} "
                                  f"(known: {', '.join(sorted(symbols))})")
        except rule_engine.errors.RuleSyntaxError as exc:
            self.error(file, rid, f"{what}: syntax error in {text!r}: {exc.message}")
        except rule_engine.errors.EngineError as exc:
            self.error(file, rid, f"{what}: {exc.message} in {text!r}")
        except ValueError as exc:  # a macro cycle
            self.error(file, rid, f"{what}: {exc}")
        return None

    def duration(self, file: str, rid: str, key: str, value: Any) -> int:
        try:
            ms = parse_duration_ms(value)
        except ValueError as exc:
            self.error(file, rid, f"{key}: {exc}")
            return 0
        if ms <= 0 and key != "cooldown":
            self.error(file, rid, f"{key}: must be longer than zero")
        return ms

    def load_rule(self, file: str, index: int, raw: dict[str, Any]) -> None:
        rid = str(raw.get("id")) if isinstance(raw, dict) and raw.get("id") else f"#{index + 1}"
        if not isinstance(raw, dict):
            self.error(file, rid, "a rule must be a mapping")
            return
        before = len([d for d in self.diagnostics if d.level == "error"])
        try:
            spec = _RuleSpec.model_validate(raw)
        except ValidationError as exc:
            for msg in _pyd_message(exc):
                self.error(file, rid, msg)
            unknown_keys = {e["loc"][0] for e in exc.errors()
                       if e["type"] == "extra_forbidden" and len(e["loc"]) == 1}
            if len(unknown_keys) != len(exc.errors()):
                return
            # only unknown keys: check the rest of the rule too, so one run shows everything
            spec = _RuleSpec.model_validate(
                {k: v for k, v in raw.items() if k not in unknown_keys})
        if spec.id in self.ids:
            self.error(file, rid, "duplicate rule id")
        self.ids.add(spec.id)
        kinds = [k for k in ("hold", "absent", "count", "distinct", "sequence", "all_of")
                 if getattr(spec, k) is not None]
        if len(kinds) > 1:
            self.error(file, rid, f"choose one correlation, not {' and '.join(kinds)}")
        kind = kinds[0] if kinds else "match"
        steps_spec = (spec.sequence or spec.all_of)
        signals = list(spec.signals)
        if steps_spec is not None:
            for st in steps_spec.steps:
                if st.signal not in signals:
                    signals.append(st.signal)
        if not signals:
            self.error(file, rid, "missing key 'signals' (the signals the rule listens to)")
        unknown = [s for s in signals if s not in CATALOGUE]
        for s in unknown:
            self.error(file, rid, f"unknown signal {s!r}")
        if unknown:
            return
        when = self.compile(file, rid, spec.when, signals, "when") if spec.when else None
        excs = []
        for ex in spec.exceptions:
            p = self.compile(file, rid, ex.when, signals, f"exception {ex.name!r}")
            if p is not None:
                excs.append((ex.name, p))
        steps: list[Step] = []
        if steps_spec is not None:
            for k, st in enumerate(steps_spec.steps):
                sp = (self.compile(file, rid, st.when, [st.signal], f"step {k + 1}")
                      if st.when else None)
                steps.append(Step(st.signal, sp))
        window = hold = n = 0
        field = None
        if spec.hold is not None:
            hold = self.duration(file, rid, "hold", spec.hold)
        if spec.absent is not None:
            hold = self.duration(file, rid, "absent", spec.absent)
        if spec.count is not None:
            n, window = spec.count.n, self.duration(file, rid, "count.within", spec.count.within)
        if spec.distinct is not None:
            n, field = spec.distinct.n, spec.distinct.field
            window = self.duration(file, rid, "distinct.within", spec.distinct.within)
            known = set(context_types(signals)) | {"participant"}
            if field not in known:
                self.error(file, rid, f"distinct.field: unknown field {field!r}")
            elif field == "participant" and spec.group_by == "participant":
                self.error(file, rid, "distinct.field participant counts participants of a "
                                      "session: it needs group_by: session (per participant "
                                      "it can never reach n)")
        if steps_spec is not None:
            window = self.duration(file, rid, f"{kind}.within", steps_spec.within)
        cooldown = self.duration(file, rid, "cooldown", spec.cooldown)
        inhibit_ms = (self.duration(file, rid, "inhibits.for", spec.inhibits.for_)
                      if spec.inhibits else 0)
        needed = frozenset(CATALOGUE[s].scope for s in signals)
        scopes = needed if spec.requires is None else frozenset(spec.requires) | needed
        if spec.requires is not None and not needed <= set(spec.requires):
            # requires may add scopes, never drop one: a rule must not run on a signal the
            # patient's consent does not cover
            self.error(file, rid, f"requires: {sorted(spec.requires)} leaves out the consent "
                                  f"scopes of the rule's signals ({', '.join(sorted(needed))}); "
                                  "requires may only add scopes")
        fields = set(context_types(signals)) | TEMPLATE_META | {"participant"}
        # the message is filled from the signal that ends the rule, then from the rest of its
        # evidence: a data field only some of the signals able to end it have would be left
        # as a literal $name in the clinician's message when another one ends it. A sequence
        # or all_of fires with one signal of every step, so any step's field is there.
        enders = signals
        everywhere = set(context_types([])) | TEMPLATE_META | {"participant"}
        if steps_spec is not None:
            everywhere |= {f for st in steps_spec.steps if st.signal in CATALOGUE
                           for f in CATALOGUE[st.signal].model.model_fields}
        elif enders:
            everywhere |= set.intersection(*(set(CATALOGUE[e].model.model_fields)
                                             for e in enders))
        for tname, tmpl in (("message", spec.message), ("agreed_message", spec.agreed_message)):
            if tmpl is None:
                continue
            t = string.Template(tmpl)
            if not t.is_valid():
                self.error(file, rid,
                           f"{tname}: invalid template (use $name or ${{name}}; $$ for $)")
                continue
            for ident in t.get_identifiers():
                if ident not in fields:
                    self.warn(file, rid, f"{tname}: unknown placeholder ${{{ident}}}")
                elif ident not in everywhere:
                    lacking = [e for e in enders
                               if ident not in CATALOGUE[e].model.model_fields]
                    self.warn(file, rid, f"{tname}: placeholder ${{{ident}}} is not a field of "
                                         f"every signal that can end this rule ({lacking[0]} "
                                         "has none): it would be shown as written")
        signal_fields = set(context_types(signals)) | {"participant"}
        for f in spec.fingerprint:
            if f not in signal_fields:
                self.error(file, rid, f"fingerprint: unknown field {f!r} (a fingerprint names "
                                      "data fields of the signal, or signal, source, "
                                      "participant, recording)")
        if not spec.description.strip():
            self.warn(file, rid, "no description (say what it detects and how to tune it)")
        if not spec.suggested_response:
            self.warn(file, rid, "no suggested_response")
        if (spec.capture and Severity.parse(spec.severity) > Severity.INFO
                and spec.agreed_message is None):
            self.warn(file, rid,
                      "capture rule without agreed_message (used when recording is agreed)")
        errors_now = len([d for d in self.diagnostics if d.level == "error"])
        if errors_now > before or not spec.enabled:
            return
        self.rules.append(CompiledRule(
            id=spec.id, index=len(self.rules), file=file, title=spec.title,
            description=spec.description.strip(), tags=tuple(spec.tags),
            signals=frozenset(signals), when=when, exceptions=tuple(excs), requires=scopes,
            severity=Severity.parse(spec.severity), capture=spec.capture,
            message=string.Template(spec.message.strip()),
            agreed_message=(string.Template(spec.agreed_message.strip())
                            if spec.agreed_message else None),
            suggested_response=tuple(spec.suggested_response),
            agreed_suggested_response=(tuple(spec.agreed_suggested_response)
                                       if spec.agreed_suggested_response is not None else None),
            group_by=spec.group_by,
            kind=kind, hold_ms=hold, window_ms=window, n=n, field=field, steps=tuple(steps),
            confidence=spec.confidence, cooldown_ms=cooldown, max_per_session=spec.max_per_session,
            fingerprint=tuple(spec.fingerprint), inhibit_tags=frozenset(spec.inhibits.tags)
            if spec.inhibits else frozenset(), inhibit_ms=inhibit_ms,
        ))


def _run(paths: Sequence[str | Path] | None) -> _Loader:
    loader = _Loader()
    files = rule_files(paths if paths else [DEFAULT_RULES_DIR])
    if not files:
        loader.error(", ".join(map(str, paths or [])), None, "no rule files found")
    for f in files:
        if not f.exists():
            loader.error(str(f), None, "no such file or directory")
            continue
        loader.load_file(f)
    return loader


def check_rules(paths: Sequence[str | Path] | None = None) -> list[Diagnostic]:
    """Every error and warning in the rule files (the default rules when ``paths`` is empty)."""
    return _run(paths).diagnostics


def load_rules(paths: Sequence[str | Path] | None = None) -> Ruleset:
    """The compiled rules of ``paths`` (default: ``config/rules/``); ``RuleError`` carrying
    the diagnostics when any is an error. Warnings are kept on ``Ruleset.warnings``."""
    loader = _run(paths)
    errors = [d for d in loader.diagnostics if d.level == "error"]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise RuleError(f"{first}{more}", list[object](loader.diagnostics))
    warnings = tuple(d for d in loader.diagnostics if d.level == "warning")
    return Ruleset(tuple(loader.rules), warnings)
