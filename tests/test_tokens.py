"""Access tokens: the mint/verify round trip, the refusal matrix and the ``token`` command."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from monitor.cli import main
from monitor.tokens import LEEWAY_S, Claims, mint, parse_duration, verify
from signals.consent import NO_CONSENT, Consent
from signals.errors import AuthError, ConfigError

SECRET = "s3cret-for-tests-0123456789abcdef0123"
NOW = 1_700_000_000_000  # epoch ms


def _raw(payload: dict[str, object], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def _refused(token: str | None, status: int, *, now: int = NOW, role: str | None = None) -> str:
    with pytest.raises(AuthError) as info:
        verify(SECRET, token, now=now, role=role)
    assert info.value.status == status
    return str(info.value)


def test_round_trip_with_consent() -> None:
    consent = {"monitoring": ["device", "audio"], "recording": "patient_allowed"}
    token = mint(SECRET, "sess-1", "pat-1", "patient", 3600, consent, now=NOW)
    claims = verify(SECRET, token, now=NOW + 1000)
    assert claims == Claims("sess-1", "pat-1", "patient",
                            Consent(frozenset({"device", "audio"}), "patient_allowed"),
                            exp=NOW // 1000 + 3600, iat=NOW // 1000)


def test_no_consent_claim_means_no_consent() -> None:
    token = mint(SECRET, "s", "c", "clinician", 60, now=NOW)
    assert "consent" not in jwt.decode(token, SECRET, algorithms=["HS256"],
                                       options={"verify_exp": False})
    claims = verify(SECRET, token, now=NOW, role="clinician")
    assert claims.consent == NO_CONSENT
    assert claims.role == "clinician"


@pytest.mark.parametrize("token", [None, ""])
def test_missing_token_is_401(token: str | None) -> None:
    assert "missing" in _refused(token, 401)


def test_forged_token_is_401() -> None:
    forged = mint("another-secret-0123456789abcdef0123", "s", "p", "clinician", 60, now=NOW)
    assert "signature" in _refused(forged, 401)


def test_tampered_payload_is_401() -> None:
    header, _payload, signature = mint(SECRET, "s", "p", "patient", 60, now=NOW).split(".")
    evil = {"sid": "s", "sub": "p", "role": "clinician", "iat": NOW // 1000,
            "exp": NOW // 1000 + 60}
    body = base64.urlsafe_b64encode(json.dumps(evil).encode()).rstrip(b"=").decode()
    _refused(f"{header}.{body}.{signature}", 401)


def test_alg_none_is_401() -> None:
    payload = {"sid": "s", "sub": "p", "role": "clinician", "iat": NOW // 1000,
               "exp": NOW // 1000 + 60}
    _refused(jwt.encode(payload, "", algorithm="none"), 401)


def test_expired_token_is_401_after_the_leeway() -> None:
    token = mint(SECRET, "s", "p", "patient", 60, now=NOW)
    verify(SECRET, token, now=NOW + (60 + LEEWAY_S - 1) * 1000)  # within the leeway
    assert "expired" in _refused(token, 401, now=NOW + (60 + LEEWAY_S) * 1000)


def test_token_from_the_future_is_401() -> None:
    token = mint(SECRET, "s", "p", "patient", 60, now=NOW + (LEEWAY_S + 5) * 1000)
    assert "future" in _refused(token, 401)


@pytest.mark.parametrize("token", ["abc", "a.b.c", "eyJhbGciOiJIUzI1NiJ9..", "é.é.é"])
def test_malformed_token_is_401(token: str) -> None:
    _refused(token, 401)


@pytest.mark.parametrize("missing", ["exp", "iat", "sid", "sub", "role"])
def test_each_required_claim_is_required(missing: str) -> None:
    payload = {"sid": "s", "sub": "p", "role": "patient", "iat": NOW // 1000,
               "exp": NOW // 1000 + 60}
    del payload[missing]
    assert missing in _refused(_raw(payload), 401)


@pytest.mark.parametrize("claims", [
    {"sid": "", "sub": "p"}, {"sid": 7, "sub": "p"}, {"sid": "s", "sub": ["p"]},
    {"consent": {"monitoring": ["everything"]}}, {"consent": "not json"},
    {"iat": "yesterday"},
])
def test_malformed_claims_are_401(claims: dict[str, object]) -> None:
    payload: dict[str, object] = {"sid": "s", "sub": "p", "role": "patient",
                                  "iat": NOW // 1000, "exp": NOW // 1000 + 60}
    payload.update(claims)
    _refused(_raw(payload), 401)


def test_unknown_role_is_403() -> None:
    payload = {"sid": "s", "sub": "p", "role": "admin", "iat": NOW // 1000,
               "exp": NOW // 1000 + 60}
    _refused(_raw(payload), 403)


def test_wrong_role_is_403() -> None:
    token = mint(SECRET, "s", "p", "patient", 60, now=NOW)
    assert "clinician" in _refused(token, 403, role="clinician")
    assert verify(SECRET, token, now=NOW, role="patient").participant == "p"


def test_mint_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="SESSIONGUARD_SECRET"):
        mint("", "s", "p", "patient", 60)
    with pytest.raises(ConfigError, match="role"):
        mint(SECRET, "s", "p", "admin", 60)
    with pytest.raises(ConfigError):
        mint(SECRET, "", "p", "patient", 60)
    with pytest.raises(ConfigError):
        mint(SECRET, "s", "p", "patient", 0)
    with pytest.raises(ConfigError, match="consent"):
        mint(SECRET, "s", "p", "patient", 60, {"recording": "always"})
    with pytest.raises(ConfigError, match="SESSIONGUARD_SECRET"):
        verify("", "x.y.z")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400), ("90", 90), (" 5m ", 300),
])
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "2w", "-1h", "1.5h", "h"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_token_command_prints_a_verifiable_token(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SESSIONGUARD_SECRET", SECRET)
    code = main(["token", "--session", "S1", "--participant", "P1", "--role", "clinician",
                 "--ttl", "15m", "--consent", '{"monitoring": ["video"]}'])
    assert code == 0
    claims = verify(SECRET, capsys.readouterr().out.strip())
    assert (claims.session, claims.participant, claims.role) == ("S1", "P1", "clinician")
    assert claims.exp - claims.iat == 900
    assert claims.consent.monitoring == frozenset({"video"})


def test_token_command_accepts_secret_flag(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SESSIONGUARD_SECRET", raising=False)
    assert main(["token", "--session", "S", "--participant", "P", "--role", "patient",
                 "--secret", SECRET]) == 0
    claims = verify(SECRET, capsys.readouterr().out.strip())
    assert claims.exp - claims.iat == 7200  # default 2h


@pytest.mark.parametrize(("extra", "needle"), [
    ([], "SESSIONGUARD_SECRET"),
])
def test_token_command_errors_are_one_sentence(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        extra: list[str], needle: str) -> None:
    monkeypatch.delenv("SESSIONGUARD_SECRET", raising=False)
    code = main(["token", "--session", "S", "--participant", "P", "--role", "patient", *extra])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert needle in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize(("extra", "needle"), [
    (["--ttl", "2x"], "argument --ttl: duration '2x' is not a number"),
    (["--ttl", "0s"], "argument --ttl: duration '0s' must be longer than zero"),
    (["--consent", "{bad"], "argument --consent: consent is not valid JSON"),
    (["--consent", "[1]"], "argument --consent: consent must be a JSON object such as"),
])
def test_a_bad_token_option_value_is_a_usage_error(
        capsys: pytest.CaptureFixture[str], extra: list[str], needle: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "--session", "S", "--participant", "P", "--role", "patient",
              "--secret", SECRET, *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and "_ConsentClaim" not in err


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_short_secret_is_warned_about_once_in_words() -> None:
    """In a real process (pytest installs warning filters of its own): our sentence, not
    PyJWT's warning with a line of its source."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "monitor.cli", "token", "--session", "S", "--participant",
           "P", "--role", "patient", "--ttl", "90", "--secret"]
    done = subprocess.run([*cmd, "short"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    claims = verify("short", done.stdout.strip())
    assert claims.exp - claims.iat == 90
    assert done.stderr == ("sessionguard token: warning: the token secret is 5 bytes; HS256 "
                           "needs at least 32 random bytes to resist guessing (python3 -c "
                           "'import secrets; print(secrets.token_urlsafe(32))')\n")
    long_enough = subprocess.run([*cmd, SECRET], capture_output=True, text=True, timeout=60)
    assert long_enough.returncode == 0 and long_enough.stderr == ""


def test_token_command_rejects_unknown_role(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["token", "--session", "S", "--participant", "P", "--role", "admin"])
    assert info.value.code == 2


def test_a_rotation_accepts_the_previous_secret_and_nothing_else() -> None:
    old = "the-previous-secret-0123456789-0123456789"
    token = mint(old, "sess-1", "pat-1", "patient", 3600, now=NOW)
    assert verify([SECRET, old], token, now=NOW).session == "sess-1"
    with pytest.raises(AuthError, match="signature"):
        verify(SECRET, token, now=NOW)
    # other failures are not hidden by trying the next secret
    expired = mint(old, "sess-1", "pat-1", "patient", 10, now=NOW)
    with pytest.raises(AuthError, match="expired"):
        verify([SECRET, old], expired, now=NOW + 3_600_000)
    with pytest.raises(ConfigError):
        verify([], token, now=NOW)


def test_previous_secrets_come_from_the_environment_only() -> None:
    from monitor.config import load_config

    previous = "old-one-0123456789,older-0123456789"
    config = load_config(env={"SESSIONGUARD_SECRET": SECRET,
                              "SESSIONGUARD_SECRET_PREVIOUS": previous})
    assert config.previous_secrets == ("old-one-0123456789", "older-0123456789")
    assert "old-one" not in repr(config)


def test_a_token_with_an_audience_is_refused_in_words() -> None:
    payload = {"sid": "s", "sub": "p", "role": "patient", "iat": NOW // 1000,
               "exp": NOW // 1000 + 60, "aud": "another-service"}
    assert "audience" in _refused(_raw(payload), 401)


@pytest.mark.parametrize("nbf_s", [-5.5, -0.25])
def test_a_fractional_nbf_is_honoured_like_an_integer_one(nbf_s: float) -> None:
    """RFC 7519's NumericDate may have a fraction: another JWT library (``nbf:
    Date.now() / 1000`` in Node) sends one, and such a token worked before nbf was read."""
    payload = {"sid": "s", "sub": "p", "role": "patient", "iat": NOW // 1000,
               "exp": NOW // 1000 + 60, "nbf": NOW / 1000 + nbf_s}
    assert verify(SECRET, _raw(payload), now=NOW).session == "s"
    payload["nbf"] = NOW / 1000 + LEEWAY_S + 0.5   # still too early, fraction or not
    assert "not valid yet" in _refused(_raw(payload), 401)
    payload["nbf"] = 10 ** 400                      # an integer no float can hold
    assert "not valid yet" in _refused(_raw(payload), 401)


@pytest.mark.parametrize("nbf", [float("nan"), float("inf"), True, "soon"])
def test_an_nbf_that_is_no_time_is_refused(nbf: object) -> None:
    payload = {"sid": "s", "sub": "p", "role": "patient", "iat": NOW // 1000,
               "exp": NOW // 1000 + 60, "nbf": nbf}
    assert "nbf" in _refused(_raw(payload), 401)


@pytest.mark.parametrize("ident", [
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",   # Persian, a zero-width non-joiner
    "\u0d15\u0d7c\u200d\u0d2e\u0d02",                     # Malayalam, a zero-width joiner
    "dr-\U0001f469\u200d\u2695\ufe0f",                    # an emoji ZWJ sequence
])
def test_ids_in_scripts_that_need_the_zero_width_joiners_are_accepted(ident: str) -> None:
    """The README promises ids of any script: ZWNJ and ZWJ are letters' joining controls in
    Persian, Indic scripts and emoji (Unicode identifiers allow them); bidi overrides and
    zero-width spaces stay refused."""
    claims = verify(SECRET, mint(SECRET, ident, ident, "patient", 60, now=NOW), now=NOW)
    assert (claims.session, claims.participant) == (ident, ident)
    for bad in ("a\u200bb", "a\u202eb", "a\ufeffb", "a\u2066b"):
        with pytest.raises(ConfigError, match="control or invisible"):
            mint(SECRET, bad, "p", "patient", 60, now=NOW)


def test_fractional_exp_and_iat_are_honoured_rounded_down() -> None:
    """exp and iat are NumericDates too: a library writing ``Date.now() / 1000`` sends a
    fraction. The token works; exp counts from its whole second (never later)."""
    payload = {"sid": "s", "sub": "p", "role": "patient", "iat": NOW / 1000 - 0.5,
               "exp": NOW / 1000 + 60.75}
    claims = verify(SECRET, _raw(payload), now=NOW)
    assert (claims.iat, claims.exp) == (NOW // 1000 - 1, NOW // 1000 + 60)
    payload["exp"] = NOW / 1000 - LEEWAY_S - 0.5
    assert "expired" in _refused(_raw(payload), 401)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), True, "later"])
def test_an_exp_or_iat_that_is_no_time_is_refused(value: object) -> None:
    for claim in ("exp", "iat"):
        payload: dict[str, object] = {"sid": "s", "sub": "p", "role": "patient",
                                      "iat": NOW // 1000, "exp": NOW // 1000 + 60}
        payload[claim] = value
        assert "exp/iat" in _refused(_raw(payload), 401)
