"""The sidecar's configuration: ``config/sessionguard.yaml`` plus ``SESSIONGUARD_*``
environment overrides.

The token secret is only ever read from the environment (``SESSIONGUARD_SECRET``, and during a
rotation the earlier ones in ``SESSIONGUARD_SECRET_PREVIOUS``); a secret key in the YAML file
is refused, so it cannot end up in version control by accident.

Environment overrides (each replaces the file's value; a relative path in one is relative to
the current directory, while the file's own paths are relative to the file)::

    SESSIONGUARD_HOST, SESSIONGUARD_PORT, SESSIONGUARD_DB, SESSIONGUARD_DB_SYNCHRONOUS,
    SESSIONGUARD_RETENTION_DAYS,
    SESSIONGUARD_RULES (os.pathsep-separated), SESSIONGUARD_HEARTBEAT_TIMEOUT,
    SESSIONGUARD_MAX_MESSAGE_BYTES, SESSIONGUARD_WEBHOOK_URLS (comma-separated),
    SESSIONGUARD_MEDIA_ICE_HOSTS (comma-separated), SESSIONGUARD_MEDIA_PARAMS,
    SESSIONGUARD_MEDIA_ENABLED (true/false), SESSIONGUARD_MEDIA_MAX_CALLS (empty: no cap),
    SESSIONGUARD_ALLOWED_ORIGINS (comma-separated)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from config import DEFAULT_CONFIG
from signals.errors import ConfigError
from signals.yaml_errors import describe_yaml_error, load_yaml, not_utf8

__all__ = [
    "METRICS_TOKEN_ENV",
    "PREVIOUS_SECRETS_ENV",
    "SECRET_ENV",
    "Config",
    "Limits",
    "MediaConfig",
    "StoreConfig",
    "WebhookConfig",
    "check_media",
    "load_config",
    "require_secret",
]

SECRET_ENV = "SESSIONGUARD_SECRET"
#: the bearer token ``GET /metrics`` asks for (unset: the metrics are open)
METRICS_TOKEN_ENV = "SESSIONGUARD_METRICS_TOKEN"
#: comma-separated earlier secrets, still accepted for verification during a rotation
PREVIOUS_SECRETS_ENV = "SESSIONGUARD_SECRET_PREVIOUS"


class _Model(BaseModel):
    # inf and NaN are never a sensible timeout, rate or size: refused like any bad number
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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
    #: open channels one session may have at once (every role); a further handshake gets 429
    max_channels_per_session: int = Field(default=32, ge=1)


class WebhookConfig(_Model):
    urls: tuple[str, ...] = ()
    secret_env: str = "SESSIONGUARD_WEBHOOK_SECRET"
    #: a receiver that has refused an alert this long after it was queued is given up on
    #: (the alert stays in the audit store; the ledger records the abandon). 0: never.
    give_up_after_hours: float = Field(default=72.0, ge=0)

    @field_validator("urls")
    @classmethod
    def _urls_ok(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            problem = webhook_url_problem(url)
            if problem is not None:
                raise ValueError(f"webhook URL {redact_url(url)!r} {problem}")
        return urls


class MediaConfig(_Model):
    enabled: bool = True
    ice_hosts: tuple[str, ...] = ()
    params: Path | None = None
    # decoded video a patient may send, in pixels a second (default 640x480 at 30 fps,
    # twelve times what the SDK sends); over it for 2 s, the sidecar stops receiving that video
    max_video_pixel_rate: int = Field(default=640 * 480 * 30, gt=0)
    #: calls whose media this process analyses at once (one analysis thread for all of
    #: them); a further call's offer is refused (``media_busy``, the clinician is told) and
    #: the SDK offers again after ``busy_retry_s``. None: no cap (an overloaded thread is
    #: still reported, as the limit ``overloaded``)
    max_calls: int | None = Field(default=None, ge=1)
    busy_retry_s: float = Field(default=60.0, gt=0, le=3600)
    #: audio/video the consent covers that has not arrived this long after a patient
    #: connected makes the session blind, in words (None: never said)
    expect_within_s: float | None = Field(default=30.0, gt=0)

    @field_validator("ice_hosts")
    @classmethod
    def _ip_addresses(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        for host in hosts:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(f"{host!r} is not an IP address") from None
        return hosts


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
    #: when set (``SESSIONGUARD_METRICS_TOKEN``, environment only), ``GET /metrics`` answers
    #: only a request carrying ``Authorization: Bearer <it>``; unset: anyone who reaches the
    #: port may scrape (``/healthz`` stays open either way)
    metrics_token: str | None = Field(default=None, repr=False, min_length=16)
    #: page origins a browser may open a channel from ("https://app.example.com"); empty:
    #: any. A handshake whose Origin header is not listed is refused 403; one without an
    #: Origin header (a native app, a server) is not affected: tokens are checked either way
    allowed_origins: tuple[str, ...] = ()

    @field_validator("allowed_origins")
    @classmethod
    def _origins_ok(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for origin in origins:
            parts = urlsplit(origin.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc or \
                    parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], "
                                 "e.g. https://app.example.com)")
            netloc = parts.netloc.lower()
            default = ":443" if parts.scheme == "https" else ":80"
            if netloc.endswith(default):  # a browser leaves the default port out of Origin
                netloc = netloc[:-len(default)]
            out.append(f"{parts.scheme}://{netloc}")
        return tuple(out)

    def origin_allowed(self, origin: str | None) -> bool:
        """May a handshake with this ``Origin`` header (``None``: none sent) go ahead?"""
        return not self.allowed_origins or origin is None or \
            origin.strip().rstrip("/").lower() in self.allowed_origins

    @field_validator("host")
    @classmethod
    def _host_ok(cls, host: str) -> str:
        problem = host_problem(host)
        if problem is not None:
            raise ValueError(problem)
        return host

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with top-level fields replaced (``host=``, ``port=``...); a bad value is a
        :class:`ConfigError` naming the field."""
        try:
            return self.model_validate({**self.model_dump(), **changes})
        except ValidationError as exc:
            raise ConfigError(_first_error(exc)) from None


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be listened on, or ``None``. An empty host would make asyncio
    listen on every interface: whoever wants that must say ``0.0.0.0`` (or ``::``)."""
    if not host.strip():
        return ("must not be empty (an empty host listens on every interface; "
                "give an address such as 127.0.0.1, or 0.0.0.0 to mean every interface)")
    if host != host.strip():
        return "must not start or end with spaces"
    return None


def redact_url(url: str) -> str:
    """``url`` without what may be secret: no user or password, no path, no query."""
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hostport}/..." if parts.path or parts.query else (
        f"{parts.scheme}://{hostport}")


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or ``None``."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "has no host"
    if port == 0:
        return "has port 0 (use 1-65535)"
    return None


def _first_error(exc: ValidationError, env_fields: Mapping[tuple[str, ...], str] | None = None,
                 file: Path | None = None) -> str:
    """One sentence for pydantic's first problem: the environment variable that set the field
    when one did, else the config file (when there is one) and the dotted key."""
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    for fields, var in (env_fields or {}).items():
        if loc[:len(fields)] == fields:
            return f"environment variable {var}: {msg}"
    where = ".".join(loc) or "config"
    return f"config file {file}: {where}: {msg}" if file is not None else f"{where}: {msg}"


def _split(value: str, sep: str) -> list[str]:
    return [v.strip() for v in value.split(sep) if v.strip()]


#: variable -> (section or None for top level, field); every value is validated as the file's
_ENV_FIELDS: dict[str, tuple[str | None, str]] = {
    "SESSIONGUARD_HOST": (None, "host"),
    "SESSIONGUARD_PORT": (None, "port"),
    "SESSIONGUARD_HEARTBEAT_TIMEOUT": (None, "heartbeat_timeout_s"),
    "SESSIONGUARD_DB": ("store", "db"),
    "SESSIONGUARD_DB_SYNCHRONOUS": ("store", "synchronous"),
    "SESSIONGUARD_RETENTION_DAYS": ("store", "retention_days"),
    "SESSIONGUARD_MAX_MESSAGE_BYTES": ("limits", "max_message_bytes"),
    "SESSIONGUARD_RULES": (None, "rules"),
    "SESSIONGUARD_WEBHOOK_URLS": ("webhooks", "urls"),
    "SESSIONGUARD_MEDIA_ICE_HOSTS": ("media", "ice_hosts"),
    "SESSIONGUARD_MEDIA_PARAMS": ("media", "params"),
    "SESSIONGUARD_MEDIA_ENABLED": ("media", "enabled"),
    "SESSIONGUARD_MEDIA_MAX_CALLS": ("media", "max_calls"),
    "SESSIONGUARD_ALLOWED_ORIGINS": (None, "allowed_origins"),
}


def _env_value(var: str, value: str) -> Any:
    if var == "SESSIONGUARD_DB_SYNCHRONOUS":
        return value.upper()
    if var == "SESSIONGUARD_RULES":
        return _split(value, os.pathsep)
    if var in ("SESSIONGUARD_WEBHOOK_URLS", "SESSIONGUARD_MEDIA_ICE_HOSTS",
               "SESSIONGUARD_ALLOWED_ORIGINS"):
        return _split(value, ",")
    if var in ("SESSIONGUARD_MEDIA_PARAMS", "SESSIONGUARD_MEDIA_MAX_CALLS"):
        return value or None
    return value


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Apply the overrides (paths stay as given: relative to the current directory); returns
    the fields each variable set, so an error names the variable rather than the file."""
    applied: dict[tuple[str, ...], str] = {}
    for var, (name, field) in _ENV_FIELDS.items():
        if var not in env:
            continue
        target = raw
        if name is not None:
            section = raw.setdefault(name, {})
            if not isinstance(section, dict):
                continue  # the file's section is not a mapping: validation says so
            target = section
        target[field] = _env_value(var, env[var])
        applied[(field,) if name is None else (name, field)] = var
    return applied


def _relative_to(raw: dict[str, Any], base: Path) -> None:
    """The file's own paths (``rules``, ``media.params``) are relative to its folder."""
    rules = raw.get("rules")
    if isinstance(rules, str):
        rules = [rules]
    if isinstance(rules, list):
        raw["rules"] = [str(base / r) if isinstance(r, str) else r for r in rules]
    media = raw.get("media")
    if isinstance(media, dict) and isinstance(media.get("params"), str):
        media["params"] = str(base / media["params"])


def _read(file: Path) -> dict[str, Any]:
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
    if "metrics_token" in raw:
        raise ConfigError(f"config file {file} must not contain the metrics token; set "
                          f"{METRICS_TOKEN_ENV}")
    return raw


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (default: the embedded ``config/sessionguard.yaml``), apply the
    ``SESSIONGUARD_*`` overrides from ``env`` (default ``os.environ``) and validate.

    Raises :class:`ConfigError` with one clear sentence for anything unusable, naming the
    environment variable when the bad value came from one, else the file and key.
    """
    env = os.environ if env is None else env
    file = Path(path) if path is not None else DEFAULT_CONFIG
    raw = _read(file)
    _relative_to(raw, file.resolve().parent)
    from_env = _apply_env(raw, env)
    raw["secret"] = env.get(SECRET_ENV) or None
    raw["previous_secrets"] = _split(env.get(PREVIOUS_SECRETS_ENV, ""), ",")
    webhooks = raw.get("webhooks")
    secret_env = "SESSIONGUARD_WEBHOOK_SECRET"
    if isinstance(webhooks, dict) and isinstance(webhooks.get("secret_env"), str):
        secret_env = webhooks["secret_env"]
    raw["webhook_secret"] = env.get(secret_env) or None
    raw["metrics_token"] = env.get(METRICS_TOKEN_ENV) or None
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        if any(e["loc"][:1] == ("metrics_token",) for e in exc.errors()):
            # said without the value: it is a secret
            raise ConfigError(f"environment variable {METRICS_TOKEN_ENV}: a metrics token "
                              "needs at least 16 characters") from None
        raise ConfigError(_first_error(exc, from_env, file)) from exc
    _check_env_paths(config, from_env)
    return config


def _check_env_paths(config: Config, from_env: Mapping[tuple[str, ...], str]) -> None:
    """A path an environment variable gave that does not exist: the sentence names the
    variable (the rules and media parameters are read later, where only the path is known)."""
    given: list[tuple[str, Path | None]] = [
        (from_env.get(("rules",), ""), p) for p in config.rules]
    given.append((from_env.get(("media", "params"), ""), config.media.params))
    for var, path in given:
        if var and path is not None and not Path(path).exists():
            raise ConfigError(f"environment variable {var}: {str(path)!r} does not exist")


def check_media(config: Config) -> None:
    """Read and validate the media detectors' parameters (``media.params``, default
    ``config/media.yaml``, with its ``audio_file``) when media analysis is on, so a broken
    file fails at start-up with a :class:`ConfigError` naming it, not at the first offer."""
    if not config.media.enabled:
        return
    from signals.media.params import load_media_params

    load_media_params(config.media.params)


def require_secret(config: Config) -> str:
    """The token secret, or a :class:`ConfigError` saying how to set it."""
    if not config.secret:
        raise ConfigError(f"no token secret: set the {SECRET_ENV} environment variable")
    return config.secret
