"""The sidecar: one asyncio process, one port, WebSocket channels and small GET routes.

    sidecar = Sidecar(load_config(), secret="...")
    async with running(sidecar, "127.0.0.1", port=0) as port:
        ...                                   # ws://127.0.0.1:{port}/v1/ws?token=T

The handshake checks the token (``monitor.tokens.verify``) in ``process_request`` and refuses
a missing, forged or expired token with 401 and a wrong role with 403. Each open channel has a
bounded send queue drained by its own writer task, so a stuck reader is dropped (close 1013)
and never blocks anyone else; each has a token bucket against floods (``rate_limited`` error,
then close 1008). Frames are parsed by :mod:`monitor.protocol` (sans I/O), per-session state
lives in :mod:`monitor.sessions`, rules in :mod:`rules`, the audit trail in
:class:`monitor.store_async.AsyncStore`.

A patient signal goes: parse → catalogue and consent check → store (``signal`` entry) →
``engine.feed`` → for each alert: ``store.append_alert`` FIRST (gives the ``seq``, queues
webhooks in the same transaction) → every clinician of the session → ack to the patient.
Logs carry ids and codes only: never labels, device lists, reasons typed by people or media.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from monitor import protocol as proto
from monitor.config import Config, require_secret
from monitor.http import HttpRoutes, json_response, split_path
from monitor.metrics import CONTENT_TYPE, Metrics
from monitor.sessions import LIMIT_WORDS, MEDIA_KINDS, Session, SessionRegistry, merge_claim
from signals.catalog import CATALOGUE
from signals.clock import ClockOffset
from signals.consent import Consent
from signals.errors import (
    AuthError,
    ConfigError,
    InvalidSignal,
    SessionguardError,
    StorageError,
)
from signals.model import Signal

__all__ = ["Channel", "Clock", "MediaFactory", "Sidecar", "epoch_ms", "running", "serve_forever"]

log = logging.getLogger("sessionguard.server")

Clock = Callable[[], int]
#: ``(sidecar, session, participant, consent) -> MediaReceiver-like`` (``handle_offer``,
#: ``set_consent``, ``close``; optionally ``closed`` and ``same_peer(sdp)``: a closed one, or
#: an offer from another peer, gets a fresh receiver); it reports through
#: ``sidecar.media_signal`` / ``media_status`` / ``media_limit``.
MediaFactory = Callable[["Sidecar", str, str, Consent], Any]

SESSION_IDLE_EVICT_MS = 3_600_000
#: WebRTC offers a participant may send at once, and then one per this many seconds
OFFER_BURST = 3
OFFER_EVERY_S = 2.0
#: alerts and ledger entries kept in memory while the store refuses them; beyond, the oldest
#: is dropped (logged)
MAX_UNSTORED = 100_000
#: a long reply (a resume) waits at most this long for a reader to make room in its queue
SLOW_READER_S = 10.0
#: recording requests a participant may have waiting for an answer at once; asking again
#: meanwhile is answered with the waiting one's id
MAX_PENDING_REQUESTS = 1
#: recording decisions remembered per session for a patient that missed one (see
#: Session.decided_requests)
MAX_DECIDED_KEPT = 16
#: a recording request id a page may choose for its request
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def _item_session(item: _Unstored) -> str:
    return item.session if isinstance(item, _Entry) else str(item[0].session)


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Entry:
    """A ledger entry the store refused, waiting (in order with alerts) for a retry."""

    session: str
    kind: str
    at: int
    body: dict[str, Any]


#: what waits in :attr:`Sidecar._unstored`: an entry, or an alert with its start time
_Unstored = _Entry | tuple[Any, float | None]


class _Engine(Protocol):
    def set_consent(self, session: str, consent: Consent, now: int) -> None: ...
    def feed(self, signal: Signal, now: int) -> Any: ...
    def tick(self, now: int) -> Any: ...
    def end_session(self, session: str) -> None: ...


@dataclass(eq=False)
class Channel:
    """One open WebSocket of one participant."""

    ws: ServerConnection
    role: str
    session: str
    participant: str
    consent: Consent
    queue: asyncio.Queue[str]
    tokens: float
    refilled: float
    expires_ms: int | None = None  # the token's exp: the channel closes when it passes
    floods: int = 0
    closing: bool = False
    slow: bool = False  # dropped as a slow reader (counted once)
    writer: asyncio.Task[None] | None = field(default=None, repr=False)
    #: seqs of the alerts this channel was sent, live or by a resume: each goes out once
    alerts_sent: set[int] = field(default_factory=set, repr=False)
    #: live alerts raised while this channel's resume reads the store, sent after it
    held: list[dict[str, Any]] | None = field(default=None, repr=False)
    #: set by the writer whenever the send queue is at most half full
    room: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    #: how far the device's clock is off the sidecar's (a patient's signals are corrected)
    clock: ClockOffset = field(default_factory=ClockOffset, repr=False)


def _default_engine(config: Config) -> _Engine:
    from config import DEFAULT_RULES_DIR
    from rules import Engine, load_rules

    paths = [str(p) for p in config.rules] or [str(DEFAULT_RULES_DIR)]
    engine: _Engine = Engine(load_rules(paths))
    return engine


def _default_media(sidecar: Sidecar, session: str, participant: str, consent: Consent) -> Any:
    from monitor.media import IceConfig, MediaParams, MediaReceiver

    async def on_signal(signal: Signal) -> None:
        await sidecar.media_signal(signal)

    # a receiver let go of (its patient left) reports media and limits to nobody: its kinds
    # stopping would follow the status that says the patient is disconnected, media none
    async def on_status(kind: str, state: str) -> None:
        if not sidecar.released(receiver):
            await sidecar.media_status(session, participant, kind, state)

    async def on_limit(kind: str, limit: str | None) -> None:
        if not sidecar.released(receiver):
            await sidecar.media_limit(session, participant, kind, limit)

    hosts = tuple(sidecar.config.media.ice_hosts)
    params = sidecar.__dict__.get("_live_media_params")
    if params is None:
        # detector parameters from config (media.params, default config/media.yaml), read once
        from signals.media.params import load_media_params

        loaded = load_media_params(sidecar.config.media.params)
        params = MediaParams(video=loaded.video, audio=loaded.audio or None,
                             max_video_pixel_rate=sidecar.config.media.max_video_pixel_rate)
        sidecar.__dict__["_live_media_params"] = params
    receiver = MediaReceiver(session, participant, consent, params=params,
                             ice=IceConfig(host_addresses=hosts), on_signal=on_signal,
                             on_status=on_status, on_limit=on_limit, clock=sidecar.clock,
                             on_frames=sidecar.metrics.count_frames)
    return receiver


def _default_webhooks(config: Config, store: Any, clock: Clock,
                      registry: CollectorRegistry) -> Any:
    from monitor.webhooks import WebhookDelivery, WebhookTarget

    if not config.webhook_secret:
        raise ConfigError(f"webhook URLs are configured but {config.webhooks.secret_env} "
                          "(their signing secret) is not set")
    targets = [WebhookTarget(url, config.webhook_secret) for url in config.webhooks.urls]
    hours = config.webhooks.give_up_after_hours
    return WebhookDelivery(store, targets, clock=clock, registry=registry,
                           give_up_after_ms=int(hours * 3_600_000) if hours > 0 else None)


class Sidecar:
    """The whole server, embeddable: build it, then ``async with running(sidecar, host, 0)``.

    ``engine``, ``store`` (an :class:`~monitor.store_async.AsyncStore`-like object),
    ``media_factory`` and ``clock`` (epoch ms) are injectable; by default they come from
    ``config``. ``secret`` defaults to ``config.secret`` (``SESSIONGUARD_SECRET``).
    """

    def __init__(
        self,
        config: Config,
        *,
        secret: str | None = None,
        clock: Clock = epoch_ms,
        registry: CollectorRegistry | None = None,
        engine: _Engine | None = None,
        store: Any = None,
        media_factory: MediaFactory | None = _default_media,
        webhooks: Any = None,
    ) -> None:
        self.config = config
        self.secret = secret if secret is not None else require_secret(config)
        # tokens signed with an earlier secret stay valid during a rotation
        self.secrets: tuple[str, ...] = (self.secret, *config.previous_secrets)
        from monitor.tokens import check_secret

        for one in self.secrets:  # one HS256 cannot use fails here, not at every handshake
            check_secret(one)
        self.clock = clock
        self.metrics = Metrics(registry)
        self.engine = engine if engine is not None else _default_engine(config)
        if media_factory is _default_media:  # broken media params fail now, not at an offer
            from monitor.config import check_media

            check_media(config)
        if store is None:
            from monitor.store import SqliteStore
            from monitor.store_async import AsyncStore

            store = AsyncStore(SqliteStore(config.store.db,
                                           synchronous=config.store.synchronous),
                               registry=self.metrics.registry,
                               linger_s=config.store.group_commit_ms / 1000,
                               commit_interval_s=config.store.commit_interval_ms / 1000,
                               clock=clock)  # dates webhook outbox rows, as delivery checks
        self.store = store
        self.media_factory = media_factory if config.media.enabled else None
        if webhooks is None and config.webhooks.urls:
            webhooks = _default_webhooks(config, store, clock, self.metrics.registry)
        self.webhooks = webhooks
        self.webhook_urls: tuple[str, ...] = (
            tuple(webhooks.urls) if webhooks is not None else ())
        wait = config.media.expect_within_s
        self.sessions = SessionRegistry(
            media_available=self.media_factory is not None,
            media_wait_ms=None if wait is None else int(wait * 1000))
        self.channels: dict[str, set[Channel]] = {}
        self.media: dict[tuple[str, str], Any] = {}
        #: receivers let go of because their patient left (see ``_closed``)
        self._released: weakref.WeakSet[Any] = weakref.WeakSet()
        #: the channel whose offer the receiver of (session, participant) answered last
        self.media_channels: dict[tuple[str, str], Channel] = {}
        #: (tokens, when) of each participant's offer bucket (see ``_offer``); kept across
        #: reconnects (a reconnect must not refill it), dropped with the idle session
        self._offer_tokens: dict[tuple[str, str], tuple[float, float]] = {}
        #: (session, participant) of offers being answered now, and how many
        self._answering: collections.Counter[tuple[str, str]] = collections.Counter()
        #: alerts the engine raised, and ledger entries of processed signals, that the store
        #: could not commit yet, in order (see ``_outcome``)
        self._unstored: collections.deque[_Unstored] = collections.deque()
        self._retrying = False
        for kind in ("audio", "video"):
            self.metrics.media_flowing.labels(kind).set_function(
                functools.partial(self._media_flowing, kind))
        self._reply_locks: dict[str, asyncio.Lock] = {}
        #: sessions whose recording requests are being read back from the ledger
        self._restoring: dict[str, asyncio.Future[None]] = {}
        self._pending_claims: weakref.WeakKeyDictionary[ServerConnection, Any] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._purger: asyncio.Task[None] | None = None
        self._stopping = False
        self.routes = HttpRoutes(health=self._health, metrics=self._metrics_body,
                                 report=self._report, metrics_token=config.metrics_token)
        self._report_store: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop())
        purge = getattr(self.store, "purge_periodically", None)
        if purge is not None:  # retention: whole sessions older than retention_days
            retention_ms = self.config.store.retention_days * 86_400_000
            self._purger = asyncio.create_task(purge(retention_ms, 3600.0, clock=self.clock))
        if self.webhooks is not None and hasattr(self.webhooks, "start"):
            result = self.webhooks.start()
            if asyncio.iscoroutine(result):
                await result
        elif self.webhooks is None and hasattr(self.store, "abandon_other_targets"):
            # every webhook URL was removed: what was queued for them is given up on the
            # record (as when one URL changes), not left queued without a word
            from monitor.webhooks import WebhookDelivery

            await WebhookDelivery(self.store, [], clock=self.clock,
                                  registry=self.metrics.registry).abandon_unconfigured()

    async def stop(self, server: Server | None = None) -> None:
        """Stop accepting, close every channel with 1001, close media, flush the store."""
        self._stopping = True
        if server is not None:
            server.close(close_connections=False)
        closing = [self._close(ch, 1001, "server shutting down")
                   for chans in self.channels.values() for ch in chans]
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        if server is not None:
            server.close(close_connections=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 5)
        for receiver in list(self.media.values()):
            with contextlib.suppress(Exception):
                await receiver.close()
        self.media.clear()
        self.media_channels.clear()
        for task in (self._ticker, self._purger):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        # a last try for what the store refused earlier (the ticker is gone)
        with contextlib.suppress(Exception):
            await self._retry_unstored()
        if self._unstored:
            log.error("%d alerts or ledger entries the audit store refused are lost at "
                      "shutdown", len(self._unstored))
        if self.webhooks is not None:
            for name in ("aclose", "stop", "close"):
                fn = getattr(self.webhooks, name, None)
                if fn is not None:
                    result = fn()
                    if asyncio.iscoroutine(result):
                        await result
                    break
        aclose = getattr(self.store, "aclose", None)
        if aclose is not None:
            await aclose()
        elif hasattr(self.store, "close"):
            self.store.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("background task failed: %s", type(exc).__name__, exc_info=exc)

    # -- HTTP -----------------------------------------------------------------------------

    def _health(self) -> dict[str, Any]:
        return {"status": "ok", "sessions": len(self.channels),
                "connections": sum(len(c) for c in self.channels.values())}

    def _metrics_body(self) -> tuple[bytes, str]:
        return self.metrics.render(), CONTENT_TYPE

    def _report(self, session: str, token: str | None, fmt: str) -> tuple[int, str, bytes]:
        try:
            from monitor import tokens

            claims = tokens.verify(self.secrets, token, now=self.clock(), role="clinician")
        except AuthError as exc:
            return exc.status, "application/json", json.dumps({"error": str(exc)}).encode()
        if claims.session != session:
            return 403, "application/json", b'{"error": "this token is for another session"}'
        from monitor.report import build_report, render_html

        try:
            report = build_report(self._sync_store(), session)
        except StorageError:
            return 404, "application/json", b'{"error": "unknown session"}'
        if fmt == "html":
            return 200, "text/html; charset=utf-8", render_html(report).encode()
        return 200, "application/json", json.dumps(report).encode()

    def _sync_store(self) -> Any:
        # Reports read through the store's own (thread-safe, locked) connection.
        return getattr(self.store, "store", self.store)

    async def process_request(self, connection: ServerConnection,
                              request: Request) -> Response | None:
        path, query = split_path(request.path)
        if path != "/v1/ws":
            # websockets >= 14 hands over any method: the routes are GET (and HEAD) only
            method = getattr(request, "method", "GET")
            if method not in ("GET", "HEAD"):
                return json_response(405, {"error": f"{path} answers GET only"},
                                     {"Allow": "GET, HEAD"})
            if self._report_path(path):
                # the report reads SQLite: keep it off the event loop
                response = await asyncio.to_thread(self.routes.handle, request.path,
                                                   request.headers)
            else:
                response = self.routes.handle(request.path, request.headers)
            if response is None:
                response = json_response(404, {"error": "not found"})
            # HEAD: the GET's status and headers (its Content-Length too), never a body
            return dataclasses.replace(response, body=b"") if method == "HEAD" else response
        if self._stopping:
            return json_response(503, {"error": "the sidecar is shutting down"})
        if not self.config.origin_allowed(request.headers.get("Origin")):
            # a page of another site holding a token (a leak, a link): browsers always send
            # Origin, so a deployment that lists its pages keeps every other page out
            self.metrics.handshakes_refused.labels("403").inc()
            return json_response(403, {"error": "this page's origin is not in the "
                                                "sidecar's allowed_origins"})
        token = query.get("token")
        if token is None:
            token = self._token_from_protocol(request)
        try:
            from monitor import tokens

            claims = tokens.verify(self.secrets, token, now=self.clock())
        except AuthError as exc:
            self.metrics.handshakes_refused.labels(str(exc.status)).inc()
            return json_response(exc.status, {"error": str(exc)})
        cap = self.config.limits.max_channels_per_session
        opening = sum(1 for c in self._pending_claims.values()
                      if c.session == claims.session and c.role == claims.role)
        open_now = sum(1 for c in self.channels.get(claims.session, ()) if c.role == claims.role)
        if open_now + opening >= cap:
            # one session's channels (a page reconnecting in a loop, a leaked token) must not
            # take the process's memory and descriptors from every other session; counted
            # per role, so patients' channels never lock the clinicians out, nor the reverse
            log.warning("a %s handshake to session %s was refused: %d %s channels open "
                        "(the limit)", claims.role, claims.session, cap, claims.role)
            self.metrics.handshakes_refused.labels("429").inc()
            return json_response(429, {"error": f"this session has {cap} {claims.role} "
                                                "channels open, the limit "
                                                "(limits.max_channels_per_session); close "
                                                "one, or retry later"})
        self._pending_claims[connection] = claims
        return None

    def process_response(self, connection: ServerConnection, request: Request,
                         response: Response) -> None:
        """A handshake that does not become a channel (websockets refused it: not an
        upgrade, a bad key or version) gives back the place it held under the session's
        channel limit at once, rather than when its connection object is collected."""
        if response.status_code != 101:
            self._pending_claims.pop(connection, None)

    @staticmethod
    def _report_path(path: str) -> bool:
        return path.startswith("/v1/sessions/")

    @staticmethod
    def _token_from_protocol(request: Request) -> str | None:
        # Browsers cannot set headers on a WebSocket: a token may come as a subprotocol
        # "sessionguard.token.<JWT>" instead of the query string (kept out of access logs).
        for value in request.headers.get_all("Sec-WebSocket-Protocol"):
            for item in value.split(","):
                item = item.strip()
                if item.startswith("sessionguard.token."):
                    return item[len("sessionguard.token."):]
        return None

    @staticmethod
    def select_subprotocol(connection: ServerConnection, offered: Any) -> Any:
        for item in offered:
            if item == "sessionguard.v1":
                return item
        return None

    # -- channels -------------------------------------------------------------------------

    async def handler(self, ws: ServerConnection) -> None:
        claims = self._pending_claims.pop(ws, None)
        if claims is None:  # pragma: no cover - process_request always runs first
            await ws.close(1008, "not authenticated")
            return
        from monitor.tokens import LEEWAY_S

        limits = self.config.limits
        channel = Channel(ws=ws, role=claims.role, session=claims.session,
                          participant=claims.participant, consent=claims.consent,
                          queue=asyncio.Queue(limits.send_queue), tokens=float(limits.burst),
                          refilled=time.monotonic(),
                          # the handshake's leeway for clock skew applies here too, so a token
                          # accepted a moment after its exp is not closed at the next tick
                          expires_ms=(claims.exp + LEEWAY_S) * 1000)
        channel.writer = asyncio.create_task(self._writer(channel))
        try:
            try:
                await self._open(channel)
            except SessionguardError as exc:
                # the audit store cannot take the connection's records (locked, full): the
                # channel is refused for now, in words, and nothing is half-recorded as done
                log.warning("%s of session %s not opened: %s", channel.role, channel.session,
                            type(exc).__name__)
                self._send(channel, proto.error_message(
                    "unavailable", "the sidecar cannot record this session right now; "
                                   "reconnect in a moment"))
                await self._close(channel, 1013, "audit store unavailable")
                return
            async for frame in ws:
                if channel.closing:
                    break
                await self._receive(channel, frame)
        except ConnectionClosed:
            pass
        finally:
            await self._closed(channel)

    async def _writer(self, channel: Channel) -> None:
        try:
            while True:
                text = await channel.queue.get()
                try:
                    await channel.ws.send(text)
                finally:
                    channel.queue.task_done()
                    if channel.queue.qsize() * 2 <= channel.queue.maxsize:
                        channel.room.set()
        except (ConnectionClosed, asyncio.CancelledError):
            pass

    def _send(self, channel: Channel, message: dict[str, Any] | str) -> None:
        if channel.closing or channel.slow:  # a slow reader is being dropped: nothing more
            return
        text = message if isinstance(message, str) else json.dumps(message)
        try:
            channel.queue.put_nowait(text)
        except asyncio.QueueFull:
            self._drop_slow(channel)

    def _drop_slow(self, channel: Channel) -> None:
        if channel.slow or channel.closing:
            return
        channel.slow = True  # counted and closed once, however many messages follow
        self.metrics.disconnects.labels("slow_reader").inc()
        log.info("dropping a slow %s channel of session %s", channel.role, channel.session)
        self._spawn(self._close(channel, 1013, "too slow: send queue full", drain=False))

    async def _send_paced(self, channel: Channel, message: dict[str, Any] | str) -> None:
        """Queue a reply that may run longer than the send queue (a resume): wait while the
        queue is over half full, so the reply never fills it and other messages (status,
        live alerts) keep their room. A reader that makes no room for ``SLOW_READER_S`` is
        dropped as a slow reader."""
        while not (channel.closing or channel.slow) \
                and channel.queue.qsize() * 2 > channel.queue.maxsize:
            channel.room.clear()
            try:
                await asyncio.wait_for(channel.room.wait(), SLOW_READER_S)
            except TimeoutError:
                self._drop_slow(channel)
                return
        self._send(channel, message)

    async def _reply(self, channel: Channel, text: str) -> None:
        """Answer the channel's own message. Written at once when nothing is queued before it
        (the usual case: no hop through the writer task, a measured part of the per-signal
        CPU), else queued behind what is. A reader that falls behind holds up only its own
        channel's next message (the socket's buffer applies back-pressure)."""
        if channel.closing:
            return
        if not channel.queue.empty():
            self._send(channel, text)
            return
        with contextlib.suppress(ConnectionClosed):
            await channel.ws.send(text)

    async def _close(self, channel: Channel, code: int, reason: str, drain: bool = True) -> None:
        """Close one channel; with ``drain``, what is already queued is sent first (briefly)."""
        if channel.closing:
            return
        channel.closing = True
        if drain and channel.writer is not None and not channel.writer.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(channel.queue.join(), 1.0)
        if channel.writer is not None:
            channel.writer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.ws.close(code, reason), 2)
        if channel.ws.state.name != "CLOSED" and channel.ws.transport is not None:
            channel.ws.transport.abort()

    def _clinicians(self, session: str) -> list[Channel]:
        return [c for c in self.channels.get(session, ()) if c.role == "clinician"]

    def _patients(self, session: str, participant: str | None = None) -> list[Channel]:
        return [c for c in self.channels.get(session, ())
                if c.role == "patient" and (participant is None or c.participant == participant)]

    def _broadcast(self, channels: Iterable[Channel], message: dict[str, Any]) -> None:
        text = json.dumps(message)
        for channel in channels:
            self._send(channel, text)

    async def _open(self, channel: Channel) -> None:
        state = self.sessions.get(channel.session)
        self.channels.setdefault(channel.session, set()).add(channel)
        self.metrics.connections.labels(channel.role).inc()
        self.metrics.active_sessions.set(len(self.channels))
        log.info("%s connected to session %s", channel.role, channel.session)
        if not state.requests_restored:
            await self._restore_requests(state)
        now = self.clock()
        if channel.role == "patient":
            state.patient_connected(channel.participant, now)
            merged = merge_claim(state.consent, channel.consent, not state.consent_from_token,
                                 keep_recording=state.recording_by_clinician)
            first = not state.consent_from_token
            state.consent_from_token = True
            if first or merged != state.consent or state.consent_unrecorded:
                await self._apply_consent(state, merged, now, by="token", announce=False)
            else:
                self._send(channel, self._consent_message(state, now))
            await self._status(state, now, "patient_connected")
        else:
            state.clinician_connected()
            self._send(channel, state.status(now))
            for request in state.pending_requests.values():
                self._send(channel, request)

    async def _closed(self, channel: Channel) -> None:
        channel.closing = True
        if channel.writer is not None:
            channel.writer.cancel()
        chans = self.channels.get(channel.session)
        if chans is not None:
            chans.discard(channel)
            if not chans:
                del self.channels[channel.session]
        self.metrics.connections.labels(channel.role).dec()
        log.info("%s left session %s", channel.role, channel.session)
        now = self.clock()
        state = self.sessions.get(channel.session)
        if channel.role == "patient":
            patient = state.patient_disconnected(channel.participant, now)
            if patient.connections == 0:
                await self._release_media(state, channel.participant)
            if not self._stopping:
                try:
                    await self._status(state, now, "patient_disconnected")
                except SessionguardError as exc:
                    log.warning("status of session %s not stored: %s", channel.session,
                                type(exc).__name__)
        else:
            state.clinician_disconnected(now)
        self.metrics.active_sessions.set(len(self.channels))

    async def _release_media(self, session: Session, participant: str) -> None:
        """The patient left (its media is ``none`` now): close its receiver, whose reports
        while closing (each kind stopped, its limits gone) are no longer the session's,
        and forget what its media could not carry. The patient's status says the rest."""
        for kind in MEDIA_KINDS:
            session.set_limit(participant, kind, None)
        receiver = self.media.pop((session.id, participant), None)
        self.media_channels.pop((session.id, participant), None)
        if receiver is not None:
            with contextlib.suppress(TypeError):  # one that cannot be weakly referenced
                self._released.add(receiver)
            with contextlib.suppress(Exception):
                await receiver.close()

    def released(self, receiver: Any) -> bool:
        """``receiver`` was let go of because its patient left: its reports are ignored."""
        return receiver in self._released

    # -- receiving ------------------------------------------------------------------------

    def _take_token(self, channel: Channel, cost: float) -> bool:
        limits = self.config.limits
        mono = time.monotonic()
        channel.tokens = min(float(limits.burst),
                             channel.tokens + (mono - channel.refilled) * limits.rate_per_s)
        channel.refilled = mono
        if channel.tokens >= cost:
            channel.tokens -= cost
            channel.floods = 0
            return True
        return False

    def _invalid(self, channel: Channel, code: str, message: str, **extra: Any) -> None:
        self.metrics.invalid_messages.labels(code).inc()
        self._send(channel, proto.error_message(code, message, **extra))

    async def _rate_limited(self, channel: Channel) -> None:
        channel.floods += 1
        self.metrics.invalid_messages.labels("rate_limited").inc()
        if channel.floods > self.config.limits.flood_close_after:
            self.metrics.disconnects.labels("flood").inc()
            log.info("closing a flooding %s channel of session %s", channel.role,
                     channel.session)
            await self._close(channel, 1008, "rate limit exceeded")
        else:
            self._send(channel, proto.error_message(
                "rate_limited", "too many messages; slow down and resend"))

    async def _receive(self, channel: Channel, frame: str | bytes) -> None:
        limits = self.config.limits
        if not self._take_token(channel, 1.0):  # before any parsing: a flood costs little
            await self._rate_limited(channel)
            return
        try:
            message = proto.parse_message(frame, channel.role,  # type: ignore[arg-type]
                                          max_bytes=limits.max_message_bytes,
                                          max_batch=limits.max_batch)
        except InvalidSignal as exc:
            if exc.seq is None or channel.role != "patient":
                self._invalid(channel, exc.code, str(exc))
            else:  # a signal that can never be stored: said with its seq, and acknowledged
                self._invalid(channel, exc.code, str(exc), seq=exc.seq)
                self._send(channel, {"type": "ack", "seq": exc.seq})
            return
        # a batch also costs a tenth of a token per item, counted from what was parsed (a
        # look at the raw text could be dodged with a space or an escape)
        if isinstance(message, proto.SignalsBatch) and message.items and \
                not self._take_token(channel, len(message.items) / 10):
            await self._rate_limited(channel)
            return
        session = self.sessions.get(channel.session)
        if channel.role == "patient":
            now = self.clock()
            if session.seen(channel.participant, now):
                await self._status(session, now, "patient_recovered")
        try:
            await self._dispatch(channel, session, message)
        except InvalidSignal as exc:
            self._invalid(channel, exc.code, str(exc))
        except SessionguardError as exc:
            log.warning("message of session %s failed: %s", channel.session, type(exc).__name__)
            self._send(channel, proto.error_message("internal", str(exc)))
        except Exception as exc:  # a bug must cost one message, not the channel or process
            log.error("message of session %s failed: %s", channel.session, type(exc).__name__,
                      exc_info=exc)
            self._send(channel, proto.error_message("internal", "the sidecar failed to handle "
                                                    "this message; it was not processed"))

    async def _dispatch(self, channel: Channel, session: Session,
                        message: proto.ClientMessage) -> None:
        if isinstance(message, proto.SignalItem):
            await self._patient_signal(channel, session, message)
            await self._reply(channel, f'{{"type":"ack","seq":{message.seq}}}')
        elif isinstance(message, proto.SignalsBatch):
            refused: list[int] = []
            for problem in message.rejected:  # items that are not signals: said, and acked
                extra = {} if problem.seq is None else {"seq": problem.seq}
                self._invalid(channel, problem.code, str(problem), **extra)
                if problem.seq is not None:
                    refused.append(problem.seq)
            # Concurrently: each item's entry is queued and fed to the engine in batch
            # order before any of them waits (the store keeps that order), so a batch shares
            # group commits instead of waiting for one per item (100 items took 1.15 s).
            # The ack waits for every item; the first failure, if any, is raised after all.
            done = await asyncio.gather(
                *(self._patient_signal(channel, session, item) for item in message.items),
                return_exceptions=True)
            failure = next((r for r in done if isinstance(r, BaseException)), None)
            if failure is not None:
                raise failure
            await self._reply(channel, json.dumps(
                {"type": "ack", "seqs": [i.seq for i in message.items] + refused}))
        elif isinstance(message, proto.WebrtcOffer):
            await self._offer(channel, session, message)
        elif isinstance(message, proto.RecordingRequest):
            await self._recording_request(channel, session, message)
        elif isinstance(message, proto.Resume):
            await self._resume(channel, message.after)
        elif isinstance(message, proto.AlertAck | proto.AlertFeedback):
            await self._alert_reply(channel, session, message)
        elif isinstance(message, proto.ConsentSet):
            now = self.clock()
            session.recording_by_clinician = True
            await self._apply_consent(session, session.consent.with_recording(message.recording),
                                      now, by=f"clinician:{channel.participant}")
            self._send(channel, {"type": "ok", "ref": "consent.set"})
        elif isinstance(message, proto.RecordingDecision):
            await self._recording_decision(channel, session, message)

    # -- signals --------------------------------------------------------------------------

    async def _patient_signal(self, channel: Channel, session: Session,
                              item: proto.SignalItem) -> None:
        """Process one patient signal. Every outcome is acknowledged by the caller (an invalid
        or out-of-scope signal too: resending it would not change anything)."""
        started = time.perf_counter()
        now = self.clock()
        offset = channel.clock.offset(now)
        try:
            signal = proto.to_signal(item, session=channel.session,
                                     participant=channel.participant, now=now,
                                     clock_skew_ms=self.config.limits.clock_skew_ms,
                                     clock_offset_ms=offset)
        except InvalidSignal as exc:
            self._invalid(channel, exc.code, str(exc), seq=item.seq)
            return
        patient = session.patient(channel.participant)
        if not patient.seqs.first_time(item.seq):
            self.metrics.signals_dropped.labels("duplicate").inc()
            return
        channel.clock.observe(int(item.at), now)  # valid and new: it may tell the offset
        if signal.at != int(item.at) + offset:
            offset = 0  # re-stamped (too far off): the ledger's at is the sidecar's own
        if signal.name == "client.heartbeat" and signal.at != now:
            # liveness is the sidecar's to time: the absence timers never depend on the
            # device's clock, confirmed or not
            signal, offset = dataclasses.replace(signal, at=now), 0
        if not session.in_scope(CATALOGUE[signal.name].scope):
            self.metrics.signals_dropped.labels("out_of_scope").inc()
        else:
            await self._process(session, signal, now, started, offset)
        if signal.name == "client.heartbeat":
            await self._signals_lost(session, channel.participant, signal, now)

    async def _signals_lost(self, session: Session, participant: str, heartbeat: Signal,
                            now: int) -> None:
        """A heartbeat's ``dropped``: signals the patient's app had to discard (its offline
        queue was full). A gap in the record, whatever the consent's scopes (it says what is
        missing, not what happened): counted, and the clinicians' ``status`` says it in words
        (stored with cause ``signals_lost``)."""
        dropped = heartbeat.data.get("dropped")
        if not isinstance(dropped, int) or not session.signals_lost(participant, dropped):
            return
        self.metrics.signals_dropped.labels("client_queue").inc(dropped)
        log.info("patient of session %s reports %d signals dropped", session.id, dropped)
        if not self._stopping:  # the signal is recorded already: a refused status waits
            await self._status(session, now, "signals_lost", keep=True)

    async def media_signal(self, signal: Signal) -> None:
        """A media detection from a :class:`~monitor.media.MediaReceiver`."""
        session = self.sessions.get(signal.session)
        spec = CATALOGUE.get(signal.name)
        if spec is None or not session.in_scope(spec.scope):
            self.metrics.signals_dropped.labels("out_of_scope").inc()
            return
        await self._process(session, signal, self.clock(), time.perf_counter())

    async def _process(self, session: Session, signal: Signal, now: int,
                       started: float, clock_offset_ms: int = 0) -> None:
        self.metrics.count_signal(signal.name)
        if signal.name == "client.heartbeat" and not signal.data:
            # Liveness only, no evidence: the ledger records what liveness changes (status
            # entries), not every heartbeat. It still reaches the engine.
            outcome = self.engine.feed(signal, now)
            await self._outcome(session, outcome, started)
            return
        # The signal entry is queued first (the store runs writes in order, so it precedes
        # any alert it causes) but not awaited yet: its commit and the alert's share one
        # group commit instead of two fsyncs in a row. Both are durable before the ack.
        entry = _Entry(session.id, "signal", signal.at, _signal_body(signal, clock_offset_ms))
        write = self.store.append_soon(entry.session, entry.kind, entry.at, entry.body)
        first_held: list[_Unstored] = []
        try:
            t0 = time.perf_counter()
            outcome = self.engine.feed(signal, now)
            self.metrics.rule_eval.observe(time.perf_counter() - t0)
            first_held = await self._outcome(session, outcome, started)
        finally:
            try:
                await write
            except SessionguardError as exc:
                # The engine has processed it: resending could not record it (the seq is
                # seen). Kept like a refused alert, before whatever it caused.
                log.warning("signal of session %s not stored yet (%s): retried every tick",
                            session.id, type(exc).__name__)
                self._hold(entry, before=first_held[0] if first_held else None)

    async def _outcome(self, session: Session, outcome: Any,
                       started: float | None) -> list[_Unstored]:
        """Record and deliver what the engine made of a signal (or a tick). What the store
        refuses waits in memory, in order, for the next tick (:meth:`_retry_unstored`);
        returns the first such item of this outcome, if any, in a list."""
        held: list[_Unstored] = []
        for derived in getattr(outcome, "derived", ()):
            self.metrics.count_signal(derived.name)
            await self._record(_Entry(session.id, "signal", derived.at, _signal_body(derived)),
                               held)
        for skip in getattr(outcome, "skipped", ()):
            body = skip.to_dict()
            await self._record(_Entry(session.id, "skip", int(body.get("at", self.clock())),
                                      body), held)
            self._broadcast(self._clinicians(session.id), {"type": "skip", **body})
        for alert in getattr(outcome, "alerts", ()):
            await self._record((alert, started), held)
        return held[:1]

    async def _record(self, item: _Unstored, held: list[_Unstored]) -> None:
        """Store ``item`` (an alert is then delivered); behind items already waiting, or
        refused, it waits too (appended to ``held``)."""
        if not self._unstored:
            try:
                await self._store_item(item)
                return
            except SessionguardError as exc:
                # The engine has spent it (an alert's cooldown and counts run): it must not
                # be lost. Kept in memory, stored (then delivered) at the next tick that can.
                what = "alert" if isinstance(item, tuple) else item.kind
                log.warning("%s of session %s not stored yet (%s): retried every tick",
                            what, _item_session(item), type(exc).__name__)
        self._hold(item)
        held.append(item)

    def _hold(self, item: _Unstored, before: _Unstored | None = None) -> None:
        if len(self._unstored) >= MAX_UNSTORED:
            dropped = self._unstored.popleft()
            log.error("%s of session %s dropped: %d items already wait for the store",
                      "alert" if isinstance(dropped, tuple) else dropped.kind,
                      _item_session(dropped), MAX_UNSTORED)
        if before is not None:
            for i, waiting in enumerate(self._unstored):
                if waiting is before:
                    self._unstored.insert(i, item)
                    return
        self._unstored.append(item)

    async def _store_item(self, item: _Unstored) -> None:
        if isinstance(item, _Entry):
            await self.store.append(item.session, item.kind, item.at, item.body)
        else:
            await self._store_alert(*item)

    async def _retry_unstored(self) -> None:
        """Store (and deliver) the alerts and entries the store refused earlier, oldest
        first; stop at the first refusal (the next tick tries again)."""
        if self._retrying:  # one retry at a time, or an item could be stored twice
            return
        self._retrying = True
        try:
            while self._unstored:
                try:
                    await self._store_item(self._unstored[0])
                except SessionguardError:
                    return
                self._unstored.popleft()
        finally:
            self._retrying = False

    async def _store_alert(self, alert: Any, started: float | None) -> None:
        """Commit ``alert`` (it gets its seq), then send it to clinicians and webhooks."""
        wire = alert.to_wire(0)
        wire.pop("seq", None)
        wire["fingerprint"] = alert.fingerprint
        target = self.sessions.get(alert.session)
        muted = target.is_muted(alert.fingerprint, alert.severity)
        if muted:
            wire["muted"] = True  # stored so: a resume, the report and webhooks say it too
        seq = await self.store.append_alert(alert.session, wire, self.webhook_urls)
        wire["seq"] = seq
        target.known_alerts.add(alert.id)
        self.metrics.alerts.labels(alert.rule, alert.severity.label).inc()
        if muted:
            self.metrics.alerts_muted.labels(alert.rule).inc()
        self._deliver_alert(alert.session, wire)
        if started is not None:
            self.metrics.delivery_latency.observe(time.perf_counter() - started)
        if self.webhooks is not None:
            self.webhooks.wake()

    # -- clinicians -----------------------------------------------------------------------

    def _deliver_alert(self, session_id: str, wire: dict[str, Any]) -> None:
        """Send a new (committed) alert to the session's clinicians: each channel gets it
        once; one whose resume is reading the store gets it after the resume's alerts."""
        text: str | None = None
        seq = int(wire["seq"])
        for channel in self._clinicians(session_id):
            if channel.held is not None:
                channel.held.append(wire)
            elif seq not in channel.alerts_sent:
                channel.alerts_sent.add(seq)
                text = text or json.dumps(_ordered_alert(wire))
                self._send(channel, text)

    async def _resume(self, channel: Channel, after: int) -> None:
        """Every stored alert after ``after`` this channel was not already sent (live alerts
        raised meanwhile follow them, each once), then the alerts' states, then ``ok``;
        paced to the reader, so a long backlog never overflows the send queue."""
        session = self.sessions.get(channel.session)
        channel.held = []
        count = 0
        try:
            alerts = await self.store.alerts_after(channel.session, after)
            for wire in alerts:
                session.known_alerts.add(str(wire.get("id")))
                seq = int(wire["seq"])
                if seq not in channel.alerts_sent:
                    channel.alerts_sent.add(seq)
                    count += 1
                    await self._send_paced(channel, _ordered_alert(wire))
        finally:  # also when the store failed: live alerts held meanwhile are not lost
            held, channel.held = channel.held or [], None
            for wire in held:  # raised while the store was read: newer than it returned
                seq = int(wire["seq"])
                if seq > after and seq not in channel.alerts_sent:
                    channel.alerts_sent.add(seq)
                    count += 1
                    self._send(channel, _ordered_alert(wire))
        # Then what clinicians did with them (any alert of the session, also those at or
        # below ``after``: their state may have changed while this panel was away).
        ledger = await self.store.entries(channel.session, _STATE_KINDS)
        for state in _alert_states(ledger).values():
            await self._send_paced(channel, state)
        await self._send_paced(channel, {"type": "ok", "ref": "resume", "after": after,
                                         "count": count})

    async def _alert_reply(self, channel: Channel, session: Session,
                           message: proto.AlertAck | proto.AlertFeedback) -> None:
        if message.id not in session.known_alerts:
            for wire in await self.store.alerts_after(session.id, 0):
                session.known_alerts.add(str(wire.get("id")))
        if message.id not in session.known_alerts:
            raise InvalidSignal(f"no alert {message.id[:64]!r} in this session", "unknown_alert")
        by = channel.participant
        # One reply of a session at a time: the alert.state messages then leave in the order
        # the entries were written, so every clinician ends with the latest state.
        lock = self._reply_locks.setdefault(session.id, asyncio.Lock())
        async with lock:
            now = self.clock()
            if isinstance(message, proto.AlertAck):
                await self.store.append(session.id, "ack", now,
                                        {"id": message.id, "by": by, "at": now})
            else:
                await self.store.append(session.id, "feedback", now,
                                        {"id": message.id, "verdict": message.verdict, "by": by,
                                         "at": now})
            self._send(channel, {"type": "ok", "ref": message.type, "id": message.id})
            # The state is read back from the ledger (off the loop), so it also carries what
            # was done before a restart and by other clinicians.
            ledger = await self.store.entries(session.id, _STATE_KINDS)
            session.learn_verdicts(ledger)
            states = _alert_states(ledger, only=message.id)
            state = states.get(message.id)
            if state is not None:
                self._broadcast(self._clinicians(session.id), state)

    # -- consent and recording requests ---------------------------------------------------

    def _consent_message(self, session: Session, now: int,
                         consent: Consent | None = None) -> dict[str, Any]:
        return {"type": "consent", **(consent or session.consent).to_dict(), "at": now}

    async def _apply_consent(self, session: Session, consent: Consent, now: int, by: str,
                             announce: bool = True) -> None:
        """Put ``consent`` in force and in the ledger. Privacy first: what it withdraws stops
        at once, whatever the store does: the engine, the live media receivers (a withdrawn
        kind's analysis ends) and the patients' pages (the SDK stops sending it) are told
        before the write. The rest (a recording policy, a first token's scopes) reaches
        receivers and pages once the ledger holds it. A failed write raises, for the caller
        to report; a withdrawal stays in force all the same."""
        old = session.consent
        withdrawn = old.monitoring - consent.monitoring
        kept = Consent(old.monitoring & consent.monitoring, consent.recording)
        session.consent = consent  # at once: a narrower consent must not wait for the disk
        self.engine.set_consent(session.id, consent, now)
        session.consent_unrecorded = True  # until the ledger holds it (see _open)
        if withdrawn:
            await self._tell_consent(session, kept, now)
        await self.store.append(session.id, "consent", now,
                                {**consent.to_dict(), "by": by, "at": now})
        session.consent_unrecorded = False
        # a later change made during the write has told them already (or will, once written)
        if (not withdrawn or kept != consent) and session.consent is consent:
            await self._tell_consent(session, consent, now)
        if announce and not self._stopping:
            await self._status(session, now, "consent_changed")

    async def _tell_consent(self, session: Session, consent: Consent, now: int) -> None:
        """Give ``consent`` to the session's live media receivers and patient pages."""
        for (sid, _pid), receiver in list(self.media.items()):
            if sid == session.id:
                with contextlib.suppress(Exception):
                    await receiver.set_consent(consent)
        self._broadcast(self._patients(session.id), self._consent_message(session, now, consent))

    async def _restore_requests(self, session: Session) -> None:
        """Read back from the ledger the recording requests of a session this process did not
        hold (a restart, even a SIGKILL; or a session forgotten while idle): those still
        waiting wait again, so clinicians are sent them and can decide; recent decisions
        answer a patient asking again (see :meth:`Session.restore_requests`); the alerts marked
        a false alarm keep muting their repeats (:meth:`Session.learn_verdicts`); the signals
        patients' apps reported dropped still count (:meth:`Session.restore_lost`). Channels opening
        at once share one read; a failed read (StorageError) refuses the channel, and the
        next one tries again."""
        pending = self._restoring.get(session.id)
        if pending is None:
            async def read() -> None:
                entries = await self.store.entries(session.id, _REQUEST_KINDS)
                if not session.requests_restored:
                    session.restore_requests(entries, MAX_DECIDED_KEPT)
                    session.learn_verdicts(entries)
                    session.restore_lost(entries)

            pending = self._restoring[session.id] = asyncio.ensure_future(read())
            pending.add_done_callback(lambda _f: self._restoring.pop(session.id, None))
        await asyncio.shield(pending)

    async def _recording_request(self, channel: Channel, session: Session,
                                 message: proto.RecordingRequest) -> None:
        decided = session.decided_requests.get(message.id) if message.id else None
        if decided is not None and decided[0] == channel.participant:
            # the page missed the decision (it was disconnected): the decision, not a new
            # request for the clinicians
            self._send(channel, {"type": "recording.decision", "id": message.id,
                                 "approved": decided[1]})
            return
        waiting = [rid for rid, r in session.pending_requests.items()
                   if r["participant"] == channel.participant]
        if len(waiting) >= MAX_PENDING_REQUESTS:
            # asking again while the request waits is the same request: no new entry, nothing
            # new to the clinicians (a flood of them once queued more than a panel can take)
            self._send(channel, {"type": "ok", "ref": "recording.request", "id": waiting[0],
                                 "pending": True})
            return
        now = self.clock()
        # the page may name its request (so it can ask about it again even when this "ok" was
        # lost with its connection); an id in use, or not a plain token, is replaced
        rid = message.id
        if (rid is None or not CLIENT_REQUEST_ID.fullmatch(rid)
                or rid in session.pending_requests or rid in session.decided_requests):
            rid = "rr-" + uuid.uuid4().hex[:12]
        request = {"type": "recording.request", "id": rid, "participant": channel.participant,
                   "reason": message.reason, "at": now}
        await self.store.append(session.id, "recording_request", now,
                                {k: v for k, v in request.items() if k != "type"})
        session.pending_requests[rid] = request
        self._broadcast(self._clinicians(session.id), request)
        self._send(channel, {"type": "ok", "ref": "recording.request", "id": rid})

    async def _recording_decision(self, channel: Channel, session: Session,
                                  message: proto.RecordingDecision) -> None:
        request = session.pending_requests.pop(message.id, None)
        if request is None:
            # the id as a field too, so a panel need not read it out of the words
            self._invalid(channel, "unknown_request",
                          f"no pending recording request {message.id[:64]!r}", id=message.id)
            return
        now = self.clock()
        await self.store.append(session.id, "recording_decision", now,
                                {"id": message.id, "approve": message.approve,
                                 "by": channel.participant, "at": now})
        session.decided_requests[message.id] = (str(request["participant"]), message.approve)
        while len(session.decided_requests) > MAX_DECIDED_KEPT:
            del session.decided_requests[next(iter(session.decided_requests))]
        decision = {"type": "recording.decision", "id": message.id, "approved": message.approve}
        self._broadcast(self._patients(session.id, str(request["participant"])), decision)
        self._broadcast(self._clinicians(session.id), {**decision, "at": now})
        if message.approve:
            await self._apply_consent(session, session.consent.with_recording("patient_allowed"),
                                      now, by=f"clinician:{channel.participant}")

    # -- media ----------------------------------------------------------------------------

    async def _offer(self, channel: Channel, session: Session, message: proto.WebrtcOffer) -> None:
        if self.media_factory is None:
            raise InvalidSignal("media analysis is not available on this sidecar",
                                "media_unavailable")
        if not (session.in_scope("audio") or session.in_scope("video")):
            raise InvalidSignal("the patient has not consented to audio or video analysis",
                                "not_consented")
        key = (channel.session, channel.participant)
        # each offer from a new peer builds a new connection (a certificate, ICE gathering:
        # about 7 ms of CPU): a participant gets OFFER_BURST at once, then one per
        # OFFER_EVERY_S, so a flood of offers cannot take the loop from other sessions
        mono = time.monotonic()
        tokens, then = self._offer_tokens.get(key, (float(OFFER_BURST), mono))
        tokens = min(float(OFFER_BURST), tokens + (mono - then) / OFFER_EVERY_S)
        if tokens < 1:
            self._offer_tokens[key] = (tokens, mono)
            raise InvalidSignal(f"WebRTC offers come too fast (at most {OFFER_BURST} at once, "
                                f"then one every {OFFER_EVERY_S:g} s)", "rate_limited")
        self._offer_tokens[key] = (tokens - 1, mono)
        current = self.media.get(key)
        cap = self.config.media.max_calls
        if cap is not None and (current is None or getattr(current, "closed", False)) \
                and self._media_calls() >= cap:
            # one analysis thread for every call: past the cap, this call goes on without
            # media analysis for now (the calls analysed keep their full analysis), in words
            retry = self.config.media.busy_retry_s
            self._send(channel, {
                "type": "error", "code": "media_busy", "retry_after_s": retry,
                "message": f"this sidecar already analyses the media of {cap} calls, its "
                           f"limit; the call goes on without camera and microphone analysis "
                           f"for now: offer again in {retry:g} s"})
            await self._media_busy(session, channel.participant)
            return
        # an offer from a new peer connection (the SDK makes one for every attachMedia: a
        # camera switch, a connection that failed) gets a fresh receiver, which replaces the
        # current one once it has answered (a failed offer leaves the current call alone)
        replace = current is not None and (getattr(current, "closed", False) or not getattr(
            current, "same_peer", lambda _sdp: True)(message.sdp))
        receiver = current if current is not None and not replace else self.media_factory(
            self, channel.session, channel.participant, session.consent)
        # a new call's offer being answered counts towards media.max_calls already (two
        # calls offering at once must not both take the last place)
        self._answering[key] += 1
        try:
            answer = await receiver.handle_offer(message.sdp)
        except SessionguardError as exc:
            if receiver is not current:
                with contextlib.suppress(Exception):
                    await receiver.close()
            raise InvalidSignal(str(exc), "bad_offer") from exc
        finally:
            self._answering[key] -= 1
            if self._answering[key] <= 0:
                del self._answering[key]
        if channel.closing and receiver is not current:  # the patient left meanwhile
            with contextlib.suppress(Exception):
                await receiver.close()
            return
        if receiver is not current:
            # the one in place now: another offer (a second tab at the same moment) may
            # have replaced ``current`` while this one was answered; the later answer wins,
            # and no receiver is left running outside ``self.media``
            current = self.media.get(key)
            self.media[key] = receiver
            if current is not None:
                with contextlib.suppress(Exception):
                    await current.close()
            old = self.media_channels.get(key)
            if current is not None and old is not None and old is not channel \
                    and not old.closing:
                # the participant's other open channel (a second tab) sent the old media:
                # it is told, so its SDK does not offer again and take the media back
                self._send(old, {"type": "error", "code": "media_replaced",
                                 "message": "another connection of this participant now "
                                            "sends its media"})
        self.media_channels[key] = channel
        patient = session.patient(channel.participant)
        for kind in MEDIA_KINDS:  # let in after a refusal: nothing has arrived yet
            if patient.limits.get(kind) == "busy":
                session.set_limit(channel.participant, kind, None)
                session.set_media(channel.participant, kind, "none")
        self._send(channel, {"type": "webrtc.answer", "sdp": answer})

    def _media_calls(self) -> int:
        """Calls whose media is analysed now, or whose offer is being answered
        (``media.max_calls`` counts these)."""
        live = {key for key, r in self.media.items() if not getattr(r, "closed", False)}
        return len(live | set(self._answering))

    async def _media_busy(self, session: Session, participant: str) -> None:
        """Tell the clinicians a patient's consented media is refused for now (the cap)."""
        changed = False
        for kind in MEDIA_KINDS:
            if session.in_scope(kind):
                changed = session.set_media(participant, kind, "stopped") or changed
                changed = session.set_limit(participant, kind, "busy") or changed
        if changed and not self._stopping:
            await self._status(session, self.clock(), "media_busy")

    def _media_flowing(self, kind: str) -> int:
        """Receivers whose ``kind`` is flowing (``sessionguard_media_flowing``, at scrape)."""
        flowing = 0
        for receiver in list(self.media.values()):
            state: dict[str, str] = getattr(receiver, "media_state", dict)()
            flowing += state.get(kind) == "flowing"
        return flowing

    async def media_status(self, session_id: str, participant: str, kind: str, state: str) -> None:
        """A :class:`~monitor.media.MediaReceiver` reports ``kind`` is flowing or stopped."""
        session = self.sessions.get(session_id)
        if state not in ("flowing", "stopped", "none"):
            return
        if session.set_media(participant, kind, state) and not self._stopping:  # type: ignore[arg-type]
            await self._status(session, self.clock(), f"media_{state}")

    async def media_limit(self, session_id: str, participant: str, kind: str,
                          limit: str | None) -> None:
        """A :class:`~monitor.media.MediaReceiver` reports what a flowing ``kind`` cannot
        carry (``"narrowband"`` audio), or ``None`` when that no longer holds."""
        if limit is not None and limit not in LIMIT_WORDS:
            return
        session = self.sessions.get(session_id)
        if session.set_limit(participant, kind, limit) and not self._stopping:
            await self._status(session, self.clock(), f"{kind}_{limit or 'unlimited'}")

    # -- status and tick ------------------------------------------------------------------

    async def _status(self, session: Session, now: int, cause: str, keep: bool = False) -> None:
        """Tell the clinicians, then the ledger. ``keep``: a ledger entry the store refuses
        waits in memory for a retry (:meth:`_record`) instead of raising."""
        status = session.status(now)
        self.metrics.status_changes.labels(cause).inc()
        # Clinicians first: what the sidecar can see must reach them even if the store fails.
        self._broadcast(self._clinicians(session.id), status)
        body = {k: v for k, v in status.items() if k != "type"} | {"cause": cause}
        if keep:
            await self._record(_Entry(session.id, "status", now, body), [])
        else:
            await self.store.append(session.id, "status", now, body)

    async def tick(self) -> None:
        """Run the engine's holds and timeouts, silence checks and idle eviction once."""
        await self._retry_unstored()
        now = self.clock()
        t0 = time.perf_counter()
        outcome = self.engine.tick(now)
        self.metrics.rule_eval.observe(time.perf_counter() - t0)
        if outcome:
            items = (*getattr(outcome, "alerts", ()), *getattr(outcome, "derived", ()),
                     *getattr(outcome, "skipped", ()))
            for sid in dict.fromkeys(str(getattr(i, "session", "")) for i in items):
                await self._outcome(self.sessions.get(sid), _only(outcome, sid), None)
        await self._close_expired(now)
        timeout_ms = int(self.config.heartbeat_timeout_s * 1000)
        for session in list(self.sessions.sessions.values()):
            if session.check_silence(now, timeout_ms):
                await self._status(session, now, "patient_silent")
            if session.check_media_wait(now):
                await self._status(session, now, "media_missing")
        for sid in self.sessions.evict_idle(now, SESSION_IDLE_EVICT_MS):
            self.engine.end_session(sid)
            for key in [k for k in self._offer_tokens if k[0] == sid]:
                del self._offer_tokens[key]
            lock = self._reply_locks.get(sid)
            if lock is not None and not lock.locked():
                del self._reply_locks[sid]

    async def _close_expired(self, now: int) -> None:
        """A token is checked at the handshake; a channel that outlives its token is closed
        (1008), so an expired token never keeps receiving alerts or sending signals."""
        expired = [ch for chans in self.channels.values() for ch in chans
                   if ch.expires_ms is not None and now >= ch.expires_ms and not ch.closing]
        for channel in expired:
            self.metrics.disconnects.labels("token_expired").inc()
            self._send(channel, proto.error_message(
                "token_expired", "the access token expired; reconnect with a fresh token"))
            await self._close(channel, 1008, "token expired")

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval_s)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep ticking: one bad tick must not blind everyone
                log.error("tick failed: %s", type(exc).__name__, exc_info=exc)


@dataclass(frozen=True)
class _Filtered:
    alerts: tuple[Any, ...]
    derived: tuple[Any, ...]
    skipped: tuple[Any, ...]


def _only(outcome: Any, session: str) -> _Filtered:
    def keep(item: Any) -> bool:
        return str(getattr(item, "session", "")) == session

    return _Filtered(
        tuple(a for a in getattr(outcome, "alerts", ()) if keep(a)),
        tuple(d for d in getattr(outcome, "derived", ()) if keep(d)),
        tuple(s for s in getattr(outcome, "skipped", ()) if keep(s)),
    )


def _signal_body(signal: Signal, clock_offset_ms: int = 0) -> dict[str, Any]:
    body = {"signal": signal.name, "at": signal.at, "participant": signal.participant,
            "source": signal.source, "data": signal.data, "seq": signal.seq,
            "confidence": signal.confidence}
    if clock_offset_ms:  # ``at`` was corrected: the device stamped it at - clock_offset_ms
        body["clock_offset_ms"] = clock_offset_ms
    return body


#: the ledger entries an alert's state is built from
_STATE_KINDS = ("alert", "ack", "feedback")
#: the ledger entries a restarted sidecar reads recording requests, the consent and the
#: clinicians' false-alarm verdicts back from
_REQUEST_KINDS = ("recording_request", "recording_decision", "consent", "alert", "feedback",
                  "status")


def _alert_states(entries: Iterable[Any], only: str | None = None) -> dict[str, dict[str, Any]]:
    """``{alert id: alert.state message}`` for every alert of the ledger ``entries`` that was
    acknowledged or given feedback (or only the alert ``only``), in ``seq`` order.

    ``acknowledged_by`` lists each clinician once, first ack first; ``feedback`` is the latest
    verdict (``null`` if none); ``at`` is the time of the latest ack or feedback."""
    seqs: dict[str, int] = {}
    states: dict[str, dict[str, Any]] = {}
    for entry in entries:
        kind = entry["kind"]
        body = entry["body"]
        aid = str(body.get("id", ""))
        if only is not None and aid != only:
            continue
        if kind == "alert":
            seqs[aid] = int(body.get("seq", 0))
        elif kind in ("ack", "feedback"):
            state = states.setdefault(aid, {"type": "alert.state", "id": aid, "seq": 0,
                                            "acknowledged_by": [], "feedback": None, "at": 0})
            if kind == "ack":
                by = str(body.get("by", ""))
                if by not in state["acknowledged_by"]:
                    state["acknowledged_by"].append(by)
            else:
                state["feedback"] = body.get("verdict")
            state["at"] = max(state["at"], int(entry["at"]))
    for aid, state in states.items():
        state["seq"] = seqs.get(aid, 0)
    return dict(sorted(states.items(), key=lambda item: item[1]["seq"]))


class _ChannelLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The channels' ``websockets`` logger without its DEBUG lines, whatever the logging
    levels: they hold each handshake's request line (the access token is in its query) and
    headers, and the frames' content (a patient's signals, device names). Its INFO and
    above (connections opened and closed, errors) pass as they are."""

    def isEnabledFor(self, level: int) -> bool:
        return level > logging.DEBUG and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs


def _ordered_alert(wire: dict[str, Any]) -> dict[str, Any]:
    return {"type": "alert", **{k: v for k, v in wire.items() if k != "type"}}


@contextlib.asynccontextmanager
async def running(sidecar: Sidecar, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    """Serve ``sidecar`` on ``host:port`` (0: any free port) and yield the bound port; on exit
    shut down gracefully (close 1001, flush the store)."""
    limits = sidecar.config.limits
    await sidecar.start()
    server = await serve(
        sidecar.handler, host, port,
        process_request=sidecar.process_request,
        process_response=sidecar.process_response,
        select_subprotocol=sidecar.select_subprotocol,
        max_size=limits.max_message_bytes,
        ping_interval=limits.ping_interval_s,
        ping_timeout=limits.ping_timeout_s,
        close_timeout=2,
        max_queue=16,
        # Messages are small JSON: per-message deflate would cost CPU and ~100 KiB of zlib
        # state per channel for little gain.
        compression=None,
        logger=_ChannelLog(logging.getLogger("sessionguard.ws")),
        server_header="sessionguard",
    )
    try:
        bound = server.sockets[0].getsockname()[1]
        yield int(bound)
    finally:
        await sidecar.stop(server)


def _freeze_heap() -> None:
    """Move everything allocated so far (imported modules, compiled rules, schemas) out of the
    garbage collector's reach. Without it every full collection walks that heap too: measured
    under load (bench_load, 500 sessions) full collections paused the loop for up to 120 ms,
    the whole of the p99 latency; with it, about 20 ms."""
    gc.collect()
    gc.freeze()
    # Full collections still walk every object allocated since (channels, sessions, rule
    # windows): 60-130 ms each at 1,000 sessions, about every 5 s under load with Python's
    # default of one full collection per 10 middle ones. One per 100 keeps young cycles
    # collected as before and only lets long-lived cyclic garbage (closed channels) wait
    # longer. Measured (bench_load, 1,000 sessions, while its alerts still came in bursts):
    # p99 signal-to-alert 330-430 ms -> about 120 ms.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, _FULL_GC_EVERY)


#: Middle-generation collections per full one (Python's default is 10); see _freeze_heap.
_FULL_GC_EVERY = 100


async def serve_forever(sidecar: Sidecar, host: str, port: int,
                        on_ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. ``on_ready(port)`` runs once
    the port is bound (``sessionguard serve`` and ``demo`` print their URLs there)."""
    import signal as _signal
    import sys

    # The store's writer thread shares the GIL with the event loop: with the default 5 ms
    # switch interval every hand-off of a write can stall the loop for up to 5 ms.
    sys.setswitchinterval(0.0005)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (_signal.SIGTERM, _signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    async with running(sidecar, host, port) as bound:
        _freeze_heap()
        if on_ready is not None:
            on_ready(bound)
        if sidecar.config.media.enabled and sidecar.media_factory is not None:
            # detector imports take seconds: do them now, off the loop, not at the first offer
            from monitor.media import preload_analyzers

            preload = loop.run_in_executor(None, preload_analyzers)
            preload.add_done_callback(lambda _: _freeze_heap())
        await stop.wait()
        log.info("shutting down")
