"""The embedded default configuration: ``sessionguard.yaml``, the rule files in ``rules/`` and
the device-label list. Shipped as package data so an installed sidecar finds them."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CONFIG_DIR", "DEFAULT_CONFIG", "DEFAULT_RULES_DIR"]

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_CONFIG = CONFIG_DIR / "sessionguard.yaml"
DEFAULT_RULES_DIR = CONFIG_DIR / "rules"
