"""The small GET routes served on the WebSocket port (through ``process_request``).

``/healthz``, ``/metrics``, ``/sdk/*`` (``monitor/static/``, CORS ``*``), ``/panel/*`` and
``/demo/*`` (``monitor/static/panel`` and ``monitor/static/demo``) and
``/v1/sessions/{id}/report?token=T&format=html|json``. Static files are read from the package
directory with path traversal refused; nothing else on disk is reachable.
"""

from __future__ import annotations

import hmac
import json
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Response

__all__ = [
    "STATIC_DIR",
    "HttpRoutes",
    "ReportHandler",
    "json_response",
    "make_response",
    "split_path",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
# a session id is at most 256 characters, each up to 4 UTF-8 bytes of 3 characters
# percent-encoded: the decoded id is checked against 256
_REPORT = re.compile(r"^/v1/sessions/([^/]{1,3072})/report$")
_MAX_SESSION_ID = 256
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".json": "application/json", ".svg": "image/svg+xml", ".wav": "audio/wav"}

#: A report's URL carries its token: no Referer sends it on, and the page (its own inline
#: style and SVG, nothing else) may load, run, frame or submit nothing, so text that got into
#: it unescaped still could not act.
_REPORT_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}

#: ``(session_id, token, format) -> (status, content_type, body)``
ReportHandler = Callable[[str, str | None, str], tuple[int, str, bytes]]


def make_response(status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
                  extra: dict[str, str] | None = None) -> Response:
    headers = Headers()
    headers["Content-Type"] = content_type
    headers["Content-Length"] = str(len(body))
    headers["Cache-Control"] = "no-store"
    headers["X-Content-Type-Options"] = "nosniff"
    for key, value in (extra or {}).items():
        headers[key] = value
    return Response(status, HTTPStatus(status).phrase, headers, body)


def json_response(status: int, value: Any, extra: dict[str, str] | None = None) -> Response:
    return make_response(status, json.dumps(value).encode(), "application/json", extra)


def _error(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def _bearer(headers: Headers | None) -> str | None:
    """The credentials of an ``Authorization: Bearer ...`` header (scheme in any case), or
    ``None`` when there is no such header or it is empty."""
    scheme, _, credentials = (headers or Headers()).get("Authorization", "").partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


def split_path(target: str) -> tuple[str, dict[str, str]]:
    """``/a/b?x=1`` → (``/a/b``, ``{"x": "1"}``); the first value of each query key."""
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items() if v}
    return parts.path, query


@dataclass(frozen=True)
class HttpRoutes:
    """Answers a GET for ``target`` or returns ``None`` (not one of these routes)."""

    health: Callable[[], dict[str, Any]]
    metrics: Callable[[], tuple[bytes, str]]
    report: ReportHandler
    static_dir: Path = STATIC_DIR
    #: the bearer token ``/metrics`` asks for; ``None``: open
    metrics_token: str | None = None

    def handle(self, target: str, headers: Headers | None = None) -> Response | None:
        """``headers``: the request's (``/metrics`` reads its ``Authorization``)."""
        path, query = split_path(target)
        if path == "/healthz":
            return json_response(200, self.health())
        if path == "/metrics":
            if not self._may_scrape(headers):
                return json_response(401, {"error": "/metrics needs Authorization: Bearer "
                                                    "<the sidecar's metrics token>"},
                                     {"WWW-Authenticate": 'Bearer realm="sessionguard-metrics"'})
            body, content_type = self.metrics()
            return make_response(200, body, content_type)
        if path.startswith("/sdk/"):
            return self._static(self.static_dir, path[len("/sdk/"):], cors=True)
        for prefix in ("panel", "demo"):
            if path == f"/{prefix}" or path.startswith(f"/{prefix}/"):
                rest = path[len(prefix) + 2:] or "index.html"
                return self._static(self.static_dir / prefix, rest, cors=False)
        match = _REPORT.match(path)
        if match:
            fmt = query.get("format", "json")
            if fmt not in ("json", "html"):
                return _error(400, "format must be json or html")
            session = unquote(match.group(1))
            if len(session) > _MAX_SESSION_ID:
                return _error(404, "unknown session")
            # the token from the query (a link a person opens) or, for a platform's backend
            # that keeps it out of URLs and their logs, an Authorization header
            tok = query.get("token")
            status, content_type, body = self.report(
                session, tok if tok is not None else _bearer(headers), fmt)
            return make_response(status, body, content_type, _REPORT_HEADERS)
        return None

    def _may_scrape(self, headers: Headers | None) -> bool:
        if self.metrics_token is None:
            return True
        given = _bearer(headers)
        # compared in constant time
        return given is not None and hmac.compare_digest(
            given.encode("utf-8", "surrogateescape"),
            self.metrics_token.encode("utf-8", "surrogateescape"))

    def _static(self, base: Path, rel: str, *, cors: bool) -> Response:
        extra = {"Access-Control-Allow-Origin": "*"} if cors else {}
        rel = unquote(rel)
        if rel.endswith("/") or not rel:
            rel += "index.html"
        root = base.resolve()
        try:
            file = (root / rel).resolve()
        except (OSError, ValueError):
            return _error(404, "not found")
        try:
            found = file.is_relative_to(root) and file.is_file()
        except (OSError, ValueError):  # a name too long for the file system, say
            found = False
        if not found:
            return make_response(404, b'{"error": "not found"}', "application/json", extra)
        try:
            body = file.read_bytes()
        except OSError:
            return _error(404, "not found")
        content_type = _TYPES.get(file.suffix) or (
            mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        return make_response(200, body, content_type, extra)
