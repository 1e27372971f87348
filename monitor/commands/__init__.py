"""One module per ``sessionguard`` subcommand. Each defines ``register(subparsers)``, which
adds its parser and sets ``func`` (``args -> exit code``) as the parser default."""

import re

__all__ = ["COMMAND_MODULES", "describe"]

# Order is the order of ``sessionguard --help``.
COMMAND_MODULES = (
    "serve",
    "demo",
    "token",
    "rules",
    "replay",
    "analyze",
    "report",
    "audit",
)


def describe(doc: str | None) -> str | None:
    """A command's ``--help`` description from its module docstring: the first paragraph
    as one line, without reStructuredText's double backticks."""
    if not doc:
        return None
    first = doc.strip().split("\n\n")[0]
    return re.sub(r":\w+:`([^`]*)`", r"\1", " ".join(first.split()).replace("``", ""))
