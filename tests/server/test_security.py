"""Findings of a security probe, against a real sidecar on 127.0.0.1 with real clients: a
token's ``nbf``, ids that could forge log lines, the HTTP methods of the GET routes and a
secret HS256 cannot use."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from monitor.config import load_config
from monitor.server import Sidecar
from monitor.tokens import mint
from signals.errors import ConfigError
from tests.server.conftest import (
    DEVICE,
    SECRET,
    Factory,
    make_config,
    recv_json,
    recv_type,
    signal,
    token,
)


def _raw_token(**claims: object) -> str:
    now = int(time.time())
    payload: dict[str, object] = {"sid": "s1", "sub": "p1", "role": "patient", "iat": now,
                                  "exp": now + 600, "consent": DEVICE}
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


async def _refused(url: str, tok: str) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"{url}?token={tok}"):
            pass
    return info.value.response.status_code, info.value.response.body or b""


async def test_a_token_not_valid_yet_is_refused_and_one_past_its_nbf_is_accepted(
        serve: Factory) -> None:
    h = await serve()
    status, body = await _refused(h.url, _raw_token(nbf=int(time.time()) + 3600))
    assert (status, b"not valid yet" in body) == (401, True)
    status, body = await _refused(h.url, _raw_token(nbf="soon"))
    assert (status, b"nbf" in body) == (401, True)
    patient = await h.connect(_raw_token(nbf=int(time.time()) - 5))
    assert (await recv_json(patient))["type"] == "consent"


@pytest.mark.parametrize("bad", ["s1\n2026-01-01 00:00:00 INFO forged line", "s1\r", "s\x1b[2J",
                                 "s\u202e1", "s\u20281", "s\x00"])
async def test_ids_with_control_characters_are_refused_and_never_logged(
        serve: Factory, caplog: pytest.LogCaptureFixture, bad: str) -> None:
    caplog.set_level(logging.INFO)
    h = await serve()
    for claims in ({"sid": bad}, {"sub": bad}):
        status, body = await _refused(h.url, _raw_token(**claims))
        assert (status, b"control or invisible" in body) == (401, True), claims
    assert not [r for r in caplog.records if bad in r.getMessage()]
    with pytest.raises(ConfigError, match="control"):
        token(bad, "p1", "patient")
    with pytest.raises(ConfigError, match="control"):
        token("s1", bad, "clinician")
    # ordinary ids of any script still work
    patient = await h.connect(token("séance-東京/7", "pätient 1", "patient", DEVICE))
    assert (await recv_json(patient))["type"] == "consent"


async def _http(port: int, method: str, path: str, headers: str = "") -> tuple[bytes, bytes]:
    """``headers``: more header lines, each ending with CRLF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)  # the sidecar closes after one answer
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("path", ["/healthz", "/metrics", "/sdk/sessionguard.js",
                                  "/v1/sessions/s1/report?token=x"])
async def test_the_get_routes_answer_get_and_head_only(serve: Factory, path: str) -> None:
    h = await serve()
    get_head, get_body = await _http(h.port, "GET", path)
    head_head, head_body = await _http(h.port, "HEAD", path)
    # HEAD: the GET's status and headers (Content-Length included), no body
    assert head_head.split(b"\r\n")[0] == get_head.split(b"\r\n")[0]
    if path != "/metrics":  # its counters may move between the two requests
        assert f"Content-Length: {len(get_body)}".encode() in head_head
    assert head_body == b""
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        head, body = await _http(h.port, method, path)
        assert head.startswith(b"HTTP/1.1 405 "), (method, head)
        assert b"Allow: GET, HEAD" in head
        assert b"GET" in body


PEM = ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE000000000000000000000000"
       "\n-----END PUBLIC KEY-----\n")


@pytest.mark.parametrize("secret", [PEM, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI0000 ops@host",
                                    '{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}'])
def test_a_secret_hs256_cannot_use_is_refused_at_start_in_words(
        tmp_path: Path, secret: str) -> None:
    # PyJWT refuses such a key as an HMAC secret: the sidecar used to start, then answer
    # every handshake 500 with an InvalidKeyError traceback
    with pytest.raises(ConfigError, match="looks like a key"):
        Sidecar(make_config(tmp_path, SESSIONGUARD_SECRET=secret))
    if "," not in secret:  # the previous secrets are a comma-separated list
        with pytest.raises(ConfigError, match="looks like a key"):
            Sidecar(make_config(tmp_path, SESSIONGUARD_SECRET_PREVIOUS=secret))
    with pytest.raises(ConfigError, match="looks like a key"):
        mint(secret, "s1", "p1", "patient", 60)


async def test_a_page_of_another_origin_is_refused_when_origins_are_listed(
        serve: Factory) -> None:
    """A deployment that lists its pages' origins keeps every other page out, even one that
    holds a valid token (a leak, a shared link); a client that sends no Origin (a native app,
    a server) and the listed pages are let in. Nothing listed: any origin, as before."""
    h = await serve(env={"SESSIONGUARD_ALLOWED_ORIGINS": "https://Call.Example.org:443, "
                                                        "http://127.0.0.1:8000"})
    tok = token("s1", "p1", "patient")
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(f"{h.url}?token={tok}", origin="https://evil.example"):
            pass
    assert info.value.response.status_code == 403
    assert b"allowed_origins" in (info.value.response.body or b"")
    for origin in ("https://call.example.org", "http://127.0.0.1:8000", None):
        ws = await h.connect(tok, origin=origin)
        assert (await recv_json(ws))["type"] == "consent"
        await ws.close()
    metrics = h.sidecar.metrics.registry.get_sample_value(
        "sessionguard_handshakes_refused_total", {"status": "403"})
    assert metrics == 1
    anyone = await serve()
    ws = await anyone.connect(tok, origin="https://evil.example")
    assert (await recv_json(ws))["type"] == "consent"


@pytest.mark.parametrize("bad", ["call.example.org", "https://call.example.org/app",
                                 "ftp://call.example.org", "https://"])
def test_an_allowed_origin_that_is_not_an_origin_is_a_config_error(
        tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="not an origin"):
        make_config(tmp_path, SESSIONGUARD_ALLOWED_ORIGINS=bad)


METRICS_TOKEN = "scrape-me-0123456789abcdef"


async def test_metrics_ask_for_the_bearer_token_when_one_is_set(serve: Factory) -> None:
    """With SESSIONGUARD_METRICS_TOKEN set, only a scraper holding it reads /metrics (as
    Prometheus sends it: ``authorization: {credentials: ...}``); health checks stay open.
    Unset: open, as before."""
    h = await serve(env={"SESSIONGUARD_METRICS_TOKEN": METRICS_TOKEN})
    for method, extra in (("GET", ""), ("HEAD", ""),
                          ("GET", "Authorization: Bearer not-the-token-at-all\r\n"),
                          ("GET", f"Authorization: Basic {METRICS_TOKEN}\r\n"),
                          ("GET", f"Authorization: Bearer {METRICS_TOKEN}x\r\n"),
                          ("GET", "Authorization: Bearer\r\n")):
        head, body = await _http(h.port, method, "/metrics", extra)
        assert head.startswith(b"HTTP/1.1 401 "), (method, extra, head)
        assert b'WWW-Authenticate: Bearer realm="sessionguard-metrics"' in head
        assert b"sessionguard_" not in body
        assert METRICS_TOKEN.encode() not in head + body
    for scheme in ("Bearer", "bearer"):
        head, body = await _http(h.port, "GET", "/metrics",
                                 f"Authorization: {scheme} {METRICS_TOKEN}\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert b"sessionguard_connections" in body
    head, _ = await _http(h.port, "GET", "/healthz")
    assert head.startswith(b"HTTP/1.1 200 ")
    open_metrics = await serve()
    head, body = await _http(open_metrics.port, "GET", "/metrics")
    assert head.startswith(b"HTTP/1.1 200 ") and b"sessionguard_connections" in body


def test_a_metrics_token_in_the_file_or_too_short_is_a_config_error(tmp_path: Path) -> None:
    file = tmp_path / "sessionguard.yaml"
    file.write_text(f"metrics_token: {METRICS_TOKEN}\n")
    with pytest.raises(ConfigError, match="must not contain the metrics token"):
        load_config(file, env={})
    with pytest.raises(ConfigError, match=r"SESSIONGUARD_METRICS_TOKEN.*16 characters") as info:
        make_config(tmp_path, SESSIONGUARD_METRICS_TOKEN="short-secret")
    assert "short-secret" not in str(info.value)  # a secret is never echoed


async def test_a_report_can_be_fetched_with_the_token_in_a_header(serve: Factory) -> None:
    """A platform's backend fetching the report keeps the clinician token out of the URL (and
    of the access logs of every proxy on the way): ``Authorization: Bearer`` is read as the
    query's ``token`` is, with the same checks."""
    h = await serve()
    p = await h.patient()
    await p.send(signal(1))
    await recv_type(p, "ack")
    path = "/v1/sessions/s1/report"
    head, body = await _http(h.port, "GET", path,
                             f"Authorization: Bearer {token('s1', 'c1', 'clinician')}\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert json.loads(body)["session"] == "s1"
    for tok, status in ((token("s1", "p1", "patient"), b"403"),
                        (token("s2", "c1", "clinician"), b"403"), ("not-a-token", b"401")):
        head, _ = await _http(h.port, "GET", path, f"Authorization: Bearer {tok}\r\n")
        assert head.startswith(b"HTTP/1.1 " + status), (tok, head)
    head, _ = await _http(h.port, "GET", path, "Authorization: Basic dXNlcjpwYXNz\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
