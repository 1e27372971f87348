"""Access tokens: JWT, HS256, signed with ``SESSIONGUARD_SECRET``.

A platform backend mints one token per participant and session (the way LiveKit or Twilio
access tokens work); clients present it when they open ``/v1/ws``. The claims are
``sid`` (session id), ``sub`` (participant id), ``role`` (``patient`` or ``clinician``),
``exp`` and ``iat`` (both required), an optional ``nbf`` (not before, honoured like ``exp``)
and an optional ``consent`` object. The ids are 1 to 256 characters with no control or
invisible formatting characters but the zero-width (non-)joiner (a newline in an id would
forge lines in the sidecar's logs).

Times here are epoch milliseconds (``now``), like everywhere in sessionguard; the JWT claims
themselves are in seconds, as RFC 7519 says.

:func:`verify` raises :class:`~signals.errors.AuthError` with ``status`` 401 for a missing,
malformed, forged or expired token and 403 for a well-signed token whose role is unknown or
not the one required.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.exceptions import InvalidKeyError
from jwt.warnings import InsecureKeyLengthWarning

from signals.consent import NO_CONSENT, Consent
from signals.errors import AuthError, ConfigError, InvalidSignal

__all__ = [
    "ALGORITHM",
    "LEEWAY_S",
    "MIN_SECRET_BYTES",
    "ROLES",
    "SECRET_ENV",
    "Claims",
    "Role",
    "check_secret",
    "mint",
    "parse_duration",
    "short_secret",
    "verify",
]

Role = Literal["patient", "clinician"]
ROLES: tuple[Role, ...] = ("patient", "clinician")
ALGORITHM = "HS256"
SECRET_ENV = "SESSIONGUARD_SECRET"
LEEWAY_S = 10
"""Clock skew tolerated on ``exp`` and ``iat``, in seconds."""

_MAX_ID = 256
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says. ``exp`` and ``iat`` are epoch seconds, as in the JWT."""

    session: str
    participant: str
    role: Role
    consent: Consent
    exp: int
    iat: int


def parse_duration(text: str) -> int:
    """``"30s"``, ``"15m"``, ``"2h"``, ``"1d"`` (or bare seconds ``"90"``) → seconds (> 0)."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"duration {text!r} is not a number followed by s, m, h or d (e.g. 2h)")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} must be longer than zero")
    return seconds


def _now_s(now: int | None) -> int:
    return int(time.time()) if now is None else now // 1000


#: HS256 keys shorter than this are weak (RFC 7518 §3.2); ``serve`` warns once (PyJWT would
#: warn at every token, with a source line)
MIN_SECRET_BYTES = 32
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


def short_secret(secret: str) -> str | None:
    """A sentence when ``secret`` is shorter than :data:`MIN_SECRET_BYTES`, else ``None``."""
    size = len(secret.encode())
    if size >= MIN_SECRET_BYTES:
        return None
    return (f"the token secret is {size} bytes; HS256 needs at least {MIN_SECRET_BYTES} random "
            "bytes to resist guessing (python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')")


#: control characters (newlines, escapes), format characters (bidi overrides, zero-width),
#: line and paragraph separators and lone surrogates: none belongs in an id, and each can
#: forge or disguise a line of the logs the ids are written to
_BAD_ID_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
#: ... but for the zero-width non-joiner and joiner: format characters that Persian, Indic
#: scripts and emoji sequences need in ordinary words (Unicode identifiers allow them too)
_JOINERS = frozenset("\u200c\u200d")


def _id_problem(value: object) -> str | None:
    """Why ``value`` is no usable session or participant id, or ``None``."""
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        return f"must be 1 to {_MAX_ID} characters"
    if any(unicodedata.category(ch) in _BAD_ID_CATEGORIES and ch not in _JOINERS
           for ch in value):
        return "must not contain control or invisible formatting characters"
    return None


def check_secret(secret: str) -> None:
    """A :class:`ConfigError` in words for a secret HS256 cannot use: none at all, or one PyJWT
    refuses as an HMAC key (a PEM or SSH key, a certificate, a JWK pasted whole), which would
    otherwise fail every token, each with a traceback."""
    if not secret:
        raise ConfigError(f"no token secret: set {SECRET_ENV} (or pass --secret)")
    try:
        HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except InvalidKeyError as exc:
        raise ConfigError("the token secret looks like a key or certificate (PEM, SSH, DER or a "
                          "JWK), which HS256 refuses: use random bytes, e.g. python3 -c "
                          "'import secrets; print(secrets.token_urlsafe(32))'") from exc


def mint(
    secret: str,
    session: str,
    participant: str,
    role: str,
    ttl_s: int,
    consent: Consent | dict[str, Any] | str | None = None,
    now: int | None = None,
) -> str:
    """Sign a token for ``participant`` in ``session`` valid for ``ttl_s`` seconds from ``now``
    (epoch ms, default the wall clock). ``consent`` may be a :class:`Consent`, its dict or JSON;
    ``None`` leaves the claim out (the verifier then reads :data:`NO_CONSENT`)."""
    check_secret(secret)
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    for name, value in (("session", session), ("participant", participant)):
        problem = _id_problem(value)
        if problem:
            raise ConfigError(f"{name} id {problem}")
    if ttl_s <= 0:
        raise ConfigError("token lifetime must be longer than zero")
    iat = _now_s(now)
    payload: dict[str, Any] = {
        "sid": session, "sub": participant, "role": role, "iat": iat, "exp": iat + int(ttl_s),
    }
    if consent is not None:
        try:
            parsed = consent if isinstance(consent, Consent) else Consent.parse(consent)
        except InvalidSignal as exc:
            raise ConfigError(str(exc)) from exc
        payload["consent"] = parsed.to_dict()
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def _decode(token: str, secrets: Sequence[str]) -> dict[str, Any]:
    """The payload of ``token`` signed with any of ``secrets`` (the current one first)."""
    for secret in secrets[:-1]:
        try:
            return _decode_with(token, secret)
        except jwt.InvalidSignatureError:
            continue
    return _decode_with(token, secrets[-1])


def _decode_with(token: str, secret: str) -> dict[str, Any]:
    return jwt.decode(
        token, secret, algorithms=[ALGORITHM],
        options={"require": ["exp", "iat", "sid", "sub", "role"],
                 "verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )


def _numeric_date(value: Any) -> int | float | None:
    """``value`` if it is a NumericDate (RFC 7519 §2: seconds since the epoch, a fraction
    allowed, as some JWT libraries write them), else ``None`` (a string, a boolean, NaN, an
    infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def verify(secret: str | Sequence[str], token: str | None, now: int | None = None,
           role: str | None = None) -> Claims:
    """Check ``token``'s signature, times and claims; return its :class:`Claims`.

    ``secret`` may be several secrets during a rotation (the current one first, then the
    earlier ones still accepted). ``now`` is epoch ms (default the wall clock). When ``role``
    is given the token must carry exactly that role (else 403).
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    for one in secrets or [""]:
        check_secret(one)
    if not token:
        raise AuthError("missing access token", status=401)
    try:
        payload = _decode(token, secrets)
    except jwt.InvalidSignatureError as exc:
        raise AuthError("access token signature is invalid", status=401) from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"access token lacks the {exc.claim!r} claim", status=401) from exc
    except jwt.InvalidAudienceError as exc:
        # a token meant for some other service: refused, and said so (it read "malformed")
        raise AuthError("access token names an audience (aud); sessionguard tokens carry "
                        "none", status=401) from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError("access token is malformed", status=401) from exc
    exp_date, iat_date = _numeric_date(payload["exp"]), _numeric_date(payload["iat"])
    if exp_date is None or iat_date is None:
        raise AuthError("access token exp/iat must be numbers of seconds", status=401)
    exp, iat = math.floor(exp_date), math.floor(iat_date)  # whole seconds, never later
    current = _now_s(now)
    if current >= exp + LEEWAY_S:
        raise AuthError("access token has expired", status=401)
    if iat > current + LEEWAY_S:
        raise AuthError("access token is issued in the future", status=401)
    if "nbf" in payload:
        nbf = _numeric_date(payload["nbf"])  # kept with its fraction: never earlier
        if nbf is None:
            raise AuthError("access token nbf must be a number of seconds", status=401)
        if current + LEEWAY_S < nbf:
            raise AuthError("access token is not valid yet (nbf)", status=401)
    session, participant = payload["sid"], payload["sub"]
    for name, value in (("sid", session), ("sub", participant)):
        problem = _id_problem(value)
        if problem:
            raise AuthError(f"access token {name} claim {problem}", status=401)
    try:
        consent = NO_CONSENT if "consent" not in payload else Consent.parse(payload["consent"])
    except InvalidSignal as exc:
        raise AuthError(f"access token {exc}", status=401) from exc
    token_role = payload["role"]
    if token_role not in ROLES:
        raise AuthError("access token role is not patient or clinician", status=403)
    if role is not None and token_role != role:
        raise AuthError(f"this endpoint needs a {role} token", status=403)
    return Claims(session, participant, token_role, consent, exp, iat)
