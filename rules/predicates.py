"""``when`` conditions: rule text compiled with the ``rule-engine`` library against a typed
context built from the signal catalogue. Rule text is never ``eval``ed.

The context of a condition has the ``data`` fields of the signals it listens to (typed from
their pydantic schemas) plus ``signal`` (name), ``source``, ``signal_confidence`` and
``recording`` (the recording policy in force). A symbol outside that set is a load error.
Lists and macros of the rule files are expanded into the text before compiling.
"""

from __future__ import annotations

import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import rule_engine
from rule_engine import DataType

from signals.catalog import CATALOGUE

__all__ = ["MACRO_DEPTH", "META_FIELDS", "Predicate", "context_types", "expand", "make_context",
           "never_equal"]

META_FIELDS: dict[str, Any] = {
    "signal": DataType.STRING,
    "source": DataType.STRING,
    "signal_confidence": DataType.FLOAT,
    "recording": DataType.STRING,
}
_STRING_LITERAL = re.compile(r"(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')")
_CACHE_MAX = 2048
#: how deep macros may use other macros
MACRO_DEPTH = 8


def _datatype(annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _datatype(args[0]) if len(args) == 1 else DataType.UNDEFINED
    if origin is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return DataType.STRING
        return DataType.UNDEFINED
    if origin is list or annotation is list:
        return DataType.ARRAY(DataType.UNDEFINED)
    if annotation is bool:
        return DataType.BOOLEAN
    if annotation in (int, float):
        return DataType.FLOAT
    if annotation is str:
        return DataType.STRING
    return DataType.UNDEFINED


def context_types(signals: Iterable[str]) -> dict[str, Any]:
    """Symbol → rule-engine type for a condition over ``signals`` (all must be catalogued)."""
    types_: dict[str, Any] = dict(META_FIELDS)
    seen_data: dict[str, Any] = {}
    for name in signals:
        for field, info in CATALOGUE[name].model.model_fields.items():
            dt = _datatype(info.annotation)
            if field in seen_data and seen_data[field] != dt:
                dt = DataType.UNDEFINED
            seen_data[field] = dt
    types_.update(seen_data)
    return types_


def _name(name: str) -> str:
    return rf"(?<![\w.$]){re.escape(name)}(?![\w])"


def expand(text: str, lists: Mapping[str, list[Any]], macros: Mapping[str, str]) -> str:
    """Replace list names with array literals and macro names with their (parenthesised)
    text, outside string literals. Macros may use lists and earlier macros, nested at most
    :data:`MACRO_DEPTH` deep; a ``ValueError`` names a macro that never stops expanding (a
    cycle)."""
    parts = _STRING_LITERAL.split(text)
    for i in range(0, len(parts), 2):  # even parts are outside string literals
        chunk = parts[i]
        for _ in range(MACRO_DEPTH):  # macros within macros, bounded
            before = chunk
            for name, body in macros.items():
                chunk = re.sub(_name(name), lambda _m, b=body: f"({b})", chunk)
            if chunk == before:
                break
        else:
            left = [n for n in macros if re.search(_name(n), _STRING_LITERAL.sub("", chunk))]
            if left:
                raise ValueError(f"macro {left[0]!r} never stops expanding (it uses itself, "
                                 f"directly or through other macros, or they nest more than "
                                 f"{MACRO_DEPTH} deep)")
        for name, values in lists.items():
            chunk = re.sub(rf"(?<![\w.$]){re.escape(name)}(?![\w])",
                           lambda _m, v=values: json.dumps(v), chunk)
        parts[i] = chunk
    return "".join(parts)


def _nodes(node: Any) -> Iterable[Any]:
    """Every expression below ``node`` (rule-engine's AST keeps children in attributes)."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, rule_engine.ast.ExpressionBase):
            yield item
            stack.extend(vars(item).values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def _type_name(expr: Any) -> str:
    name = getattr(expr.result_type, "name", str(expr.result_type)).lower()
    if isinstance(expr, rule_engine.ast.SymbolExpression):
        return f"the {name} field {expr.name!r}"
    return f"a {name}"


def never_equal(rule: rule_engine.Rule) -> str | None:
    """Why an ``==``/``!=`` of ``rule`` compares values of two different types (so is never
    or always true, e.g. the boolean ``focused == "false"``), or ``None``. rule-engine checks
    the types of ordering, arithmetic and regex operators, but not of equality."""
    undefined = (DataType.UNDEFINED, DataType.NULL)
    for expr in _nodes(rule.statement.expression):
        if type(expr) is rule_engine.ast.ContainsExpression:
            # ``focused in ["false"]``: a field looked up in a list of another type
            member, container = expr.member.result_type, expr.container.result_type
            items = getattr(container, "value_type", DataType.UNDEFINED)
            if (getattr(container, "name", None) == "ARRAY"
                    and member not in undefined and items not in undefined
                    and not DataType.is_compatible(member, items)):
                return (f"{_type_name(expr.member)} is looked up in a list of "
                        f"{getattr(items, 'name', str(items)).lower()}s, which is never true")
            continue
        if type(expr) is not rule_engine.ast.ComparisonExpression:
            continue
        left, right = expr.left.result_type, expr.right.result_type
        if left in undefined or right in undefined or DataType.is_compatible(left, right):
            continue
        verdict = "always true" if expr.type == "ne" else "never true"
        return (f"{_type_name(expr.left)} is compared with {_type_name(expr.right)}, "
                f"which is {verdict}")
    return None


class Predicate:
    """A compiled condition. Raises ``rule_engine.errors.EngineError`` subclasses on bad text;
    evaluation errors at run time (a value of an unexpected type) count as *no match*."""

    __slots__ = ("_cache", "_rule", "text")

    def __init__(self, text: str, symbols: Mapping[str, Any]) -> None:
        ctx = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(dict(symbols)),
                                  default_value=None)
        self.text = text
        self._rule = rule_engine.Rule(text, context=ctx)
        mismatch = never_equal(self._rule)
        if mismatch is not None:
            raise rule_engine.errors.EngineError(mismatch)
        self._cache: dict[Any, bool] = {}

    def __call__(self, ctx: Mapping[str, Any], key: Any = None) -> bool:
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        try:
            result = bool(self._rule.matches(ctx))
        except rule_engine.errors.EngineError:
            result = False
        if key is not None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = result
        return result


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def make_context(name: str, source: str, confidence: float, recording: str,
                 data: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """The evaluation context of one signal, and a hashable cache key for it (``None`` when
    the data cannot be made hashable: then conditions are evaluated every time)."""
    ctx = dict(data)
    ctx["signal"] = name
    ctx["source"] = source
    ctx["signal_confidence"] = confidence
    ctx["recording"] = recording
    key: Any = (name, source, confidence, recording, tuple(data.items()))
    try:
        hash(key)
    except TypeError:
        key = (name, source, confidence, recording, _freeze(dict(data)))
        try:
            hash(key)
        except TypeError:
            key = None
    return ctx, key
