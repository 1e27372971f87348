"""The sidecar's configuration: ``config/sessionguard.yaml`` plus ``SESSIONGUARD_*``
environment overrides.

The token secret is only ever read from the environment (``SESSIONGUARD_SECRET``, and during a
rotation the earlier ones in ``SESSIONGUARD_SECRET_PREVIOUS``); a secret key in the YAML file
is refused, so it cannot end up in version control by accident.

Environment overrides (each replaces the file's value)::

    SESSIONGUARD_HOST, SESSIONGUARD_PORT, SESSIONGUARD_DB, SESSIONGUARD_DB_SYNCHRONOUS,
    SESSIONGUARD_RETENTION_DAYS,
    SESSIONGUARD_RULES (os.pathsep-separated), SESSIONGUARD_HEARTBEAT_TIMEOUT,
    SESSIONGUARD_MAX_MESSAGE_BYTES, SESSIONGUARD_WEBHOOK_URLS (comma-separated),
    SESSIONGUARD_MEDIA_ICE_HOSTS (comma-separated), SESSIONGUARD_MEDIA_PARAMS,
    SESSIONGUARD_MEDIA_ENABLED (true/false)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config import DEFAULT_CONFIG
from signals.errors import ConfigError
from signals.schema import first_error
from signals.yaml_errors import describe_yaml_error, load_yaml, not_utf8

__all__ = [
    "PREVIOUS_SECRETS_ENV",
    "SECRET_ENV",
    "Config",
    "Limits",
    "MediaConfig",
    "StoreConfig",
    "WebhookConfig",
    "load_config",
    "require_secret",
]

SECRET_ENV = "SESSIONGUARD_SECRET"
#: comma-separated earlier secrets, still accepted for verification during a rotation
PREVIOUS_SECRETS_ENV = "SESSIONGUARD_SECRET_PREVIOUS"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Model):
    db: Path = Path("sessionguard.db")
    retention_days: int = Field(default=30, ge=1)
    #: FULL fsyncs every group commit (survives power loss); NORMAL survives a killed
    #: process but not a power cut, for much lower latency on slow disks.
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    #: how long a write may wait for others to share its commit (and fsync): CPU per signal
    #: against latency. 0 commits whatever is queued at once.
    group_commit_ms: float = Field(default=10.0, ge=0, le=50)
    #: commits start at most this often: under load, what arrives meanwhile (alerts too)
    #: waits for the next commit and shares it; after a quiet spell a write commits at once.
    commit_interval_ms: float = Field(default=10.0, ge=0, le=100)


class Limits(_Model):
    max_message_bytes: int = Field(default=65536, ge=256)
    max_batch: int = Field(default=100, ge=1)
    rate_per_s: float = Field(default=50.0, gt=0)
    burst: int = Field(default=100, ge=1)
    flood_close_after: int = Field(default=20, ge=1)
    send_queue: int = Field(default=256, ge=1)
    ping_interval_s: float | None = Field(default=20.0, gt=0)
    ping_timeout_s: float | None = Field(default=20.0, gt=0)
    clock_skew_ms: int = Field(default=300_000, ge=0)


class WebhookConfig(_Model):
    urls: tuple[str, ...] = ()
    secret_env: str = "SESSIONGUARD_WEBHOOK_SECRET"
    #: a receiver that has refused an alert this long after it was queued is given up on
    #: (the alert stays in the audit store; the ledger records the abandon). 0: never.
    give_up_after_hours: float = Field(default=72.0, ge=0)


class MediaConfig(_Model):
    enabled: bool = True
    ice_hosts: tuple[str, ...] = ()
    params: Path | None = None
    # decoded video a patient may send, in pixels a second (default 640x480 at 30 fps,
    # twelve times what the SDK sends); over it for 2 s, the sidecar stops receiving that video
    max_video_pixel_rate: int = Field(default=640 * 480 * 30, gt=0)


class Config(_Model):
    """Everything ``serve`` needs. ``secret`` comes from the environment only."""

    host: str = "127.0.0.1"
    port: int = Field(default=8750, ge=0, le=65535)
    store: StoreConfig = StoreConfig()
    rules: tuple[Path, ...] = ()
    limits: Limits = Limits()
    heartbeat_timeout_s: float = Field(default=20.0, gt=0)
    tick_interval_s: float = Field(default=1.0, gt=0)
    webhooks: WebhookConfig = WebhookConfig()
    media: MediaConfig = MediaConfig()
    secret: str | None = Field(default=None, repr=False)
    #: earlier token secrets still accepted while their tokens run out (rotation)
    previous_secrets: tuple[str, ...] = Field(default=(), repr=False)
    webhook_secret: str | None = Field(default=None, repr=False)

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with top-level fields replaced (``host=``, ``port=``...)."""
        return self.model_validate({**self.model_dump(), **changes})


def _split(value: str, sep: str) -> list[str]:
    return [v.strip() for v in value.split(sep) if v.strip()]


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    def section(name: str) -> dict[str, Any]:
        value = raw.get(name)
        if not isinstance(value, dict):
            value = {}
            raw[name] = value
        return value

    simple = {
        "SESSIONGUARD_HOST": (raw, "host"),
        "SESSIONGUARD_PORT": (raw, "port"),
        "SESSIONGUARD_HEARTBEAT_TIMEOUT": (raw, "heartbeat_timeout_s"),
    }
    for key, (target, field) in simple.items():
        if key in env:
            target[field] = env[key]
    if "SESSIONGUARD_DB" in env:
        section("store")["db"] = env["SESSIONGUARD_DB"]
    if "SESSIONGUARD_DB_SYNCHRONOUS" in env:
        section("store")["synchronous"] = env["SESSIONGUARD_DB_SYNCHRONOUS"].upper()
    if "SESSIONGUARD_RETENTION_DAYS" in env:
        section("store")["retention_days"] = env["SESSIONGUARD_RETENTION_DAYS"]
    if "SESSIONGUARD_MAX_MESSAGE_BYTES" in env:
        section("limits")["max_message_bytes"] = env["SESSIONGUARD_MAX_MESSAGE_BYTES"]
    if "SESSIONGUARD_RULES" in env:
        raw["rules"] = _split(env["SESSIONGUARD_RULES"], os.pathsep)
    if "SESSIONGUARD_WEBHOOK_URLS" in env:
        section("webhooks")["urls"] = _split(env["SESSIONGUARD_WEBHOOK_URLS"], ",")
    if "SESSIONGUARD_MEDIA_ICE_HOSTS" in env:
        section("media")["ice_hosts"] = _split(env["SESSIONGUARD_MEDIA_ICE_HOSTS"], ",")
    if "SESSIONGUARD_MEDIA_PARAMS" in env:
        section("media")["params"] = env["SESSIONGUARD_MEDIA_PARAMS"] or None
    if "SESSIONGUARD_MEDIA_ENABLED" in env:
        section("media")["enabled"] = env["SESSIONGUARD_MEDIA_ENABLED"]


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (default: the embedded ``config/sessionguard.yaml``), apply the
    ``SESSIONGUARD_*`` overrides from ``env`` (default ``os.environ``) and validate.

    Raises :class:`ConfigError` with one clear sentence for anything unusable.
    """
    env = os.environ if env is None else env
    file = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {not_utf8(f'file {file}', exc)}") from None
    try:
        raw = load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {file} is not valid YAML "
                          f"({describe_yaml_error(exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {file} must be a mapping of keys to values")
    if "secret" in raw or "webhook_secret" in raw or "previous_secrets" in raw:
        raise ConfigError(f"config file {file} must not contain secrets; set {SECRET_ENV}")
    _apply_env(raw, env)
    base = file.resolve().parent
    rules = raw.get("rules")
    if isinstance(rules, str):
        rules = [rules]
    if isinstance(rules, list):
        raw["rules"] = [str(base / r) if isinstance(r, str) else r for r in rules]
    media = raw.get("media")
    if isinstance(media, dict) and isinstance(media.get("params"), str):
        media["params"] = str(base / media["params"])
    raw["secret"] = env.get(SECRET_ENV) or None
    raw["previous_secrets"] = [s for s in env.get(PREVIOUS_SECRETS_ENV, "").split(",") if s]
    webhooks = raw.get("webhooks")
    secret_env = "SESSIONGUARD_WEBHOOK_SECRET"
    if isinstance(webhooks, dict) and isinstance(webhooks.get("secret_env"), str):
        secret_env = webhooks["secret_env"]
    raw["webhook_secret"] = env.get(secret_env) or None
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {file}: {first_error(exc, 'config')}") from exc


def require_secret(config: Config) -> str:
    """The token secret, or a :class:`ConfigError` saying how to set it."""
    if not config.secret:
        raise ConfigError(f"no token secret: set the {SECRET_ENV} environment variable")
    return config.secret
