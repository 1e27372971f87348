"""PyYAML's parse errors as one line: where in the file, and what is wrong there."""

from __future__ import annotations

import yaml

__all__ = ["describe_yaml_error"]


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """``"line 2, column 1: expected ',' or ']', but got '<stream end>'"``. PyYAML's own
    text spans several lines (the context, a copy of the line, a caret); error messages
    here are one sentence."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or " ".join(str(exc).split())
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
