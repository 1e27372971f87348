"""``sessionguard rules check [PATH...]`` and
``sessionguard rules test FIXTURES... [--rules PATH]``.

``check`` prints one line per problem (``FILE: rule ID: error|warning: what``) and a tally on
stderr and exits 1 on any of them; when clean it prints ``ok: N rules`` on stdout, exit 0.
``test`` runs promtool-style rule fixtures (see ``rules.fixtures``) and exits 1 when one
fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rules import check_rules, load_rules
from rules.fixtures import FixtureCase, run_case
from signals.errors import ConfigError, SessionguardError
from signals.yaml_errors import describe_yaml_error, load_yaml, not_utf8

__all__ = ["register", "run_check", "run_test"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("rules", help="validate or test rule files",
                                   description="Validate or test rule files.")
    sub = parser.add_subparsers(dest="rules_command", metavar="ACTION",
                                parser_class=type(parser))
    sub.required = True
    check = sub.add_parser("check", help="validate rule files (default: the built-in rules)")
    check.add_argument("paths", nargs="*", metavar="PATH", help="rule files or directories")
    check.set_defaults(func=run_check)
    test = sub.add_parser("test", help="run rule fixtures (signals in, expected alerts out)")
    test.add_argument("fixtures", nargs="+", metavar="FIXTURES",
                      help="fixture files or directories")
    test.add_argument("--rules", action="append", default=None, metavar="PATH",
                      help="rule files or directories (default: the built-in rules)")
    test.set_defaults(func=run_test)


def run_check(args: argparse.Namespace) -> int:
    diagnostics = check_rules(args.paths or None)
    for d in diagnostics:  # problems go to stderr (CONTRACT: errors go to stderr)
        print(d, file=sys.stderr)
    if diagnostics:
        errors = sum(1 for d in diagnostics if d.level == "error")
        print(f"{errors} error(s), {len(diagnostics) - errors} warning(s)", file=sys.stderr)
        return 1
    ruleset = load_rules(args.paths or None)
    print(f"ok: {len(ruleset.rules)} rules")
    return 0


def _fixture_files(paths: list[str]) -> list[Path]:
    """Fixture files in order: a directory gives its ``*.yaml`` and ``*.yml``, like rules."""
    out: list[Path] = []
    for p in map(Path, paths):
        out.extend(sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml"))
                   if p.is_dir() else [p])
    return out


def _invalid(exc: Exception) -> str:
    """One line for a fixture that cannot run: every pydantic problem with its key."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'test'}: "
                         f"{str(e['msg']).removeprefix('Value error, ')}" for e in exc.errors())
    return str(exc).splitlines()[0]


def _cases(path: Path) -> list[Any]:
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({describe_yaml_error(exc)})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(not_utf8(path, exc)) from None
    cases = doc.get("tests") if isinstance(doc, dict) else None
    if not isinstance(cases, list):
        raise ConfigError(f"{path}: expected a mapping with a 'tests' list")
    if not cases:
        raise ConfigError(f"{path}: the 'tests' list is empty")
    return cases


def run_test(args: argparse.Namespace) -> int:
    ruleset = load_rules(args.rules)
    files = _fixture_files(args.fixtures)
    if not files:
        raise ConfigError(f"no fixture files (*.yaml, *.yml) in {', '.join(args.fixtures)}")
    failed = total = 0
    for path in files:
        for i, raw in enumerate(_cases(path), 1):
            total += 1
            try:
                case = FixtureCase.model_validate(raw)
                result = run_case(case, ruleset)
            except (ValidationError, SessionguardError, ValueError) as exc:
                failed += 1
                print(f"{path}: test {i}: invalid fixture: {_invalid(exc)}")
                continue
            if not result.ok:
                failed += 1
                for problem in result.problems:
                    print(f"{path}: {case.name}: {problem}")
    print(f"{total - failed}/{total} rule tests passed")
    return 1 if failed else 0
