"""The rules engine: YAML rules in, explained alerts out. Pure: no I/O, time passed in.

See the README section "Rules" for the rule format and ``docs/internals.md`` for the seam.
"""

from rules.durations import format_duration, parse_duration_ms
from rules.engine import REPLAY_DEFAULT_CONSENT, Engine
from rules.loader import check_rules, load_rules, rule_files
from rules.model import Alert, Diagnostic, Outcome, Severity, Skip
from rules.ruleset import CompiledRule, Ruleset

__all__ = [
    "REPLAY_DEFAULT_CONSENT",
    "Alert",
    "CompiledRule",
    "Diagnostic",
    "Engine",
    "Outcome",
    "Ruleset",
    "Severity",
    "Skip",
    "check_rules",
    "format_duration",
    "load_rules",
    "parse_duration_ms",
    "rule_files",
]
