"""One module per ``sessionguard`` subcommand. Each defines ``register(subparsers)``, which
adds its parser and sets ``func`` (``args -> exit code``) as the parser default."""

__all__ = ["COMMAND_MODULES"]

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
