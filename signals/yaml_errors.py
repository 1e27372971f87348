"""Reading YAML the one way the project does: :func:`load_yaml` refuses duplicate keys
(PyYAML silently keeps the last one, so a second ``rules:`` or ``severity:`` would quietly
replace the first), and :func:`describe_yaml_error` turns PyYAML's parse errors into one line:
where in the file, and what is wrong there. :func:`not_utf8` words a decoding failure."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

__all__ = ["UniqueKeyLoader", "describe_yaml_error", "load_yaml", "not_utf8"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that raises a :class:`yaml.YAMLError` on a key given twice in one
    mapping (the error's mark is the second occurrence)."""

    def construct_mapping(self, node: yaml.MappingNode,
                          deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # "<<: *base" merges are meant to be overridden
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if first is not None:
                    raise ConstructorError(
                        None, None,
                        f"duplicate key {key!r} (first given at line {first.start_mark.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (a :class:`yaml.YAMLError`, like any
    other syntax problem, so :func:`describe_yaml_error` gives its line)."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise yaml.YAMLError("nested too deeply to read") from None


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """``"line 2, column 1: expected ',' or ']', but got '<stream end>'"``. PyYAML's own
    text spans several lines (the context, a copy of the line, a caret); error messages
    here are one sentence."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def not_utf8(name: object, exc: UnicodeDecodeError) -> str:
    """``"FILE is not UTF-8 text (byte 0xe9 at offset 12)"``."""
    byte = exc.object[exc.start:exc.start + 1].hex() if exc.object else ""
    where = f" (byte 0x{byte} at offset {exc.start})" if byte else ""
    return f"{name} is not UTF-8 text{where}"
