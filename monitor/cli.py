"""The ``sessionguard`` command line.

Exit codes: 0 success, 1 the command ran and found a problem the user must fix, 2 usage
error. Errors are one sentence on stderr; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from monitor.commands import COMMAND_MODULES
from signals.errors import SessionguardError

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sessionguard", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"monitor.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"monitor.commands.{name}":
                raise
            continue  # a command not built yet
        module.register(sub)
    for command in sub.choices.values():
        _accept_debug(command)
    return parser


def _accept_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after a command (``sessionguard report S --debug``) as well as before it;
    absent there, it leaves the top-level value alone."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _accept_debug(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        return 130
    except SessionguardError as exc:
        if args.debug:
            raise
        print(f"sessionguard {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        print(
            f"sessionguard {args.command}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(
                ": "
            ),
            file=sys.stderr,
        )
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
