"""A Python reference client for ``/v1/ws``: what a native iOS or Android app does.

It speaks the same protocol as the browser SDK (``monitor/static/sessionguard.js``) and
docs/native.md: connect with a token, send signals with a ``seq``, keep the unacknowledged
ones (bounded; the oldest are dropped first and counted), resend them after a reconnect
(exponential backoff with jitter), and receive ``consent``, ``ack`` and
``recording.decision``. Tests use it to play a native app; it is also a small, readable
template for writing a client in another language.

:class:`Outbox` is the delivery state without I/O (seq numbers, unacked, dropped count);
:class:`ReferenceClient` adapts it to a ``websockets`` connection::

    async with ReferenceClient(url, token) as client:       # url: ws://host:port/v1/ws
        await client.signal("os.screen_capture", {"active": True, "api": "UIScreen.isCaptured"})
        await client.drained()                              # every signal acknowledged
        decision = await client.request_recording("for my notes")

Dropped signals are reported in the next heartbeat: ``client.heartbeat`` with
``{"dropped": N}`` (the same convention as the browser SDK). A signal whose JSON is over
:data:`MAX_SIGNAL_BYTES` could never be delivered (the sidecar closes the connection on a
frame over its limit, at every resend): it is dropped at once and counted, never queued.
Frames are paced (:class:`Pacer`) to stay within the sidecar's documented per-connection
allowance, so a long queue resent after an outage is not refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from signals.errors import SessionguardError

__all__ = ["ClientError", "Outbox", "Pacer", "ReferenceClient", "SignalTooLarge",
           "backoff_delay", "frame_cost", "scope_of", "websocket_url"]

BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 15.0
BATCH = 50
BATCH_CHARS = 16_000     # a resend frame's JSON at most (the sidecar's frame limit: 64 KiB)
MAX_SIGNAL_BYTES = 60_000   # one signal's JSON (UTF-8) at most: alone in a frame it still
                            # fits the sidecar's default limit of 65,536 bytes
HEARTBEAT_S = 5.0
# The sidecar's default allowance per connection: a token bucket of 100 tokens refilled at
# 50 a second; a frame costs 1, a "signals" batch 0.1 more per item. The client spends from
# a bucket of half that size refilled at 4/5 of that rate (frames bunched in transit fit).
PACE_BURST = 50.0
PACE_RATE = 40.0
RESEND_WAIT_S = 2.0      # after a "rate_limited" error, before everything unacked goes again


class ClientError(SessionguardError):
    """The reference client was refused or closed."""


class SignalTooLarge(ValueError):
    """A signal whose JSON is over :data:`MAX_SIGNAL_BYTES`: it can never be delivered."""


def websocket_url(url: str) -> str:
    """``url`` as the connection uses it (``http:``/``https:`` mean ``ws:``/``wss:``, as in
    browsers); :class:`ValueError` for one no connection can use (another scheme, no host,
    a fragment, unparsable): such a url is refused at once, never retried."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        url = ("ws" if scheme.lower() == "http" else "wss") + sep + rest
    try:
        parse_uri(url)
    except (InvalidURI, ValueError) as exc:
        reason = str(exc).rpartition(": ")[2] if isinstance(exc, InvalidURI) else str(exc)
        raise ValueError(f"not a usable WebSocket url ({reason}); use ws:// or wss:// "
                         "(http:// and https:// are taken as those)") from None
    return url


def frame_cost(message: dict[str, Any]) -> float:
    """What a frame costs the sidecar's token bucket: 1, and 0.1 more per batch item."""
    items = message.get("items")
    return 1.0 + (len(items) / 10 if isinstance(items, list) else 0.0)


class Pacer:
    """The client's model of the sidecar's per-connection token bucket, without I/O (the
    time, in seconds, is an argument): :meth:`wait` says how long before a frame of ``cost``
    may go, :meth:`spend` takes its tokens."""

    def __init__(self, now: float, burst: float = PACE_BURST, rate: float = PACE_RATE) -> None:
        self.burst, self.rate = burst, rate
        self.tokens, self.at = burst, now

    def _refill(self, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def wait(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` tokens are there (0: now)."""
        return max(0.0, cost - self._refill(now)) / self.rate

    def spend(self, cost: float, now: float) -> None:
        self.tokens = self._refill(now) - cost

    def empty(self, now: float) -> None:
        """The sidecar said its bucket is empty (``rate_limited``)."""
        self._refill(now)
        self.tokens = 0.0


def scope_of(signal: str) -> str | None:
    """The consent scope a signal needs: ``os.*`` and ``client.*`` need ``device``; the
    heartbeat (it carries nothing about the patient) needs none."""
    if signal == "client.heartbeat":
        return None
    return "device" if signal.startswith(("os.", "client.")) else None


def backoff_delay(attempt: int, rng: random.Random,
                  low: float = BACKOFF_MIN_S, high: float = BACKOFF_MAX_S) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): a random point in the upper
    half of a window that starts at ``low``-``2*low`` (0.25-0.5 s) and doubles up to ``high``
    (jitter, so clients never retry in lockstep)."""
    ceiling = min(high, low * 2 ** min(attempt + 1, 31))
    return float(ceiling / 2 + rng.random() * ceiling / 2)


class Outbox:
    """Delivery state without I/O: numbers signals, keeps them until acknowledged.

    ``seq`` starts at ``start`` (default: a time-derived number, so an app restarted within
    the same session keeps counting above its earlier numbers) and counts up by one.
    """

    def __init__(self, limit: int = 1000, start: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.seq = int(time.time() * 1000) * 1000 if start is None else start
        self.unacked: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.dropped = 0

    def add(self, signal: str, data: dict[str, Any], at: int) -> dict[str, Any]:
        """Number a new signal, keep it, return its wire message. :class:`SignalTooLarge`
        (after counting it as dropped) if its JSON is over :data:`MAX_SIGNAL_BYTES`."""
        message = {"type": "signal", "seq": self.seq + 1, "signal": signal, "at": at,
                   "data": data}
        size = len(json.dumps(message).encode())
        if size > MAX_SIGNAL_BYTES:
            self.dropped += 1
            raise SignalTooLarge(f"a {signal} signal of {size} bytes is over the limit of "
                                 f"{MAX_SIGNAL_BYTES} bytes for one signal: dropped")
        if signal == "client.heartbeat" and self.dropped:
            message["data"] = {**data, "dropped": self.dropped}
            self.dropped = 0
        self.seq += 1
        self.unacked[self.seq] = message
        while len(self.unacked) > self.limit:
            self.unacked.popitem(last=False)
            self.dropped += 1
        return message

    def discard(self, keep: Callable[[dict[str, Any]], bool]) -> int:
        """Forget the unacknowledged messages ``keep`` rejects; returns how many."""
        gone = [seq for seq, message in self.unacked.items() if not keep(message)]
        for seq in gone:
            del self.unacked[seq]
        return len(gone)

    def ack(self, seq: Any) -> bool:
        """Forget an acknowledged seq; ``True`` if it was pending."""
        return self.unacked.pop(seq, None) is not None if isinstance(seq, int) else False

    def resend(self, batch: int = BATCH, chars: int = BATCH_CHARS) -> list[dict[str, Any]]:
        """The ``signals`` messages that resend everything unacknowledged, oldest first: at
        most ``batch`` items and (unless one item alone is larger) ``chars`` of JSON each."""
        frames: list[list[dict[str, Any]]] = []
        size = 0
        for item in self.unacked.values():
            n = len(json.dumps(item)) + 1
            if not frames or len(frames[-1]) >= batch or size + n > chars:
                frames.append([])
                size = 0
            frames[-1].append(item)
            size += n
        return [{"type": "signals", "items": items} for items in frames]


class ReferenceClient:
    """One participant's connection, reconnecting until :meth:`close`.

    ``on_message(msg)`` is called for every message received (after the client's own
    handling). ``rng`` seeds the backoff jitter; ``clock`` gives epoch ms. While connected a
    ``client.heartbeat`` goes out every ``heartbeat_s`` seconds.

    Only what the last ``consent`` allows is sent (:func:`scope_of`); other signals are
    counted in ``out_of_scope`` and dropped. A connection sends (and resends what is
    unacknowledged) once the sidecar's first ``consent`` on it has arrived.

    A handshake refused with 401/403 (bad or expired token, wrong role) is not retried in a
    loop: ``get_token()``, when given, is asked once for a fresh token; otherwise (or if that
    one is refused too) the client stops, ``refused`` is true and the waiting calls raise
    :class:`ClientError`. A ``url`` no connection can use raises :class:`ValueError` here
    (see :func:`websocket_url`).

    A signal too large to deliver (:data:`MAX_SIGNAL_BYTES`) is not sent: :meth:`signal`
    returns ``None``, counts it in ``too_large`` and in the next heartbeat's ``dropped``, and
    says so in ``last_error`` (its name and size, not its content). Frames go no faster than
    :class:`Pacer` allows; a ``rate_limited`` error (a frame refused) has everything
    unacknowledged sent again after :data:`RESEND_WAIT_S`.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        limit: int = 1000,
        seq_start: int | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        on_message: Callable[[dict[str, Any]], None] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        get_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self._base, self._token, self._get_token = websocket_url(url), token, get_token
        self.outbox = Outbox(limit, seq_start)
        self.consent: dict[str, Any] | None = None
        self.received: list[dict[str, Any]] = []
        self.connects = 0
        self.refused = False
        self._attempt = 0        # the backoff restarts on a connection's ack, not on connect
        self.out_of_scope = 0
        self.too_large = 0
        self._ready = False      # this connection's first consent has arrived
        self._rng = rng or random.Random(0)
        self._clock = clock
        self._on_message = on_message
        self._heartbeat_s = heartbeat_s
        self._ws: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._pacer = Pacer(time.monotonic())
        self._resender: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        # recording requests by id: (reason, waiters); re-asked after every reconnect
        self._requests: dict[str, tuple[str, list[asyncio.Future[dict[str, Any]]]]] = {}
        self._asked: list[str] = []   # ids sent on this connection, awaiting their "ok"
        self._closed = False
        self.last_error: str | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> ReferenceClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, timeout: float = 10.0) -> None:
        """Start the connection loop and wait for the first connection."""
        self._runner = asyncio.create_task(self._run())
        await self.wait_for(lambda: self.connected, timeout)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def close(self) -> None:
        self._closed = True
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        self._fail(ClientError("client closed"))

    @property
    def attempt(self) -> int:
        """Reconnects tried since a connection last got an ``ack`` (the backoff's step)."""
        return self._attempt

    def _url(self) -> str:
        return f"{self._base}{'&' if '?' in self._base else '?'}token={self._token}"

    async def _run(self) -> None:
        renewed = False
        while not self._closed:
            try:
                async with websockets.connect(self._url(), open_timeout=5,
                                              close_timeout=1) as ws:
                    self._ws, self._ready, renewed = ws, False, False
                    self._pacer = Pacer(time.monotonic())   # a connection's own bucket
                    self.connects += 1
                    await self._notify()
                    beat = asyncio.create_task(self._heartbeat())
                    try:
                        async for raw in ws:
                            msg = self._receive(raw)
                            if msg and msg["type"] == "consent" and not self._ready:
                                self._ready, self._asked = True, []
                                self._resend_later(0.0)
                                for rid in list(self._requests):
                                    await self._ask(rid)
                            await self._notify()
                    finally:
                        beat.cancel()
                        if self._resender is not None:
                            self._resender.cancel()
            except asyncio.CancelledError:
                raise
            except websockets.InvalidStatus as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                if exc.response.status_code in (401, 403):
                    if self._get_token is None or renewed:
                        await self._refuse()
                        return
                    self._token, renewed = await self._get_token(), True
                    continue
            except Exception as exc:  # refused, reset, closed: all mean "try again later"
                self.last_error = f"{type(exc).__name__}: {exc}"
            self._ws = None
            await self._notify()
            if self._closed:
                break
            await asyncio.sleep(backoff_delay(self._attempt, self._rng))
            self._attempt += 1

    async def _refuse(self) -> None:
        """Stop for good: the token is not accepted."""
        self.refused = True
        self._fail(ClientError(f"refused: {self.last_error}"))
        await self._notify()

    def _fail(self, error: ClientError) -> None:
        for _reason, waiters in self._requests.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(error)

    async def _heartbeat(self) -> None:
        """``{}`` (or ``{"dropped": N}``) every ``heartbeat_s``: the sidecar's sign of life."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            await self.signal("client.heartbeat")

    def _allowed(self, signal: str) -> bool:
        scope = scope_of(signal)
        return scope is None or scope in (self.consent or {}).get("monitoring", [])

    def _receive(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        self.received.append(msg)
        kind = msg.get("type")
        if kind == "ack":   # {"seq": N}, or {"seqs": [...]} for a batch
            self._attempt = 0
            seqs = msg.get("seqs")
            for seq in seqs if isinstance(seqs, list) else [msg.get("seq")]:
                self.outbox.ack(seq)
        elif kind == "error" and msg.get("code") == "rate_limited" and self._ready:
            self._pacer.empty(time.monotonic())   # a frame was refused: all again, later
            self._resend_later(RESEND_WAIT_S)
        elif kind == "consent":
            self.consent = {"monitoring": msg.get("monitoring", []),
                            "recording": msg.get("recording")}
            self.out_of_scope += self.outbox.discard(lambda m: self._allowed(m["signal"]))
        elif kind == "ok" and msg.get("ref") == "recording.request" and self._asked:
            # the sidecar may answer with another id (the request already waiting): the
            # decision will carry that one
            asked, rid = self._asked.pop(0), msg.get("id")
            if isinstance(rid, str) and rid != asked and asked in self._requests:
                reason, waiters = self._requests.pop(asked)
                self._requests.setdefault(rid, (reason, []))[1].extend(waiters)
        elif kind == "recording.decision" and msg.get("id") in self._requests:
            rid = msg["id"]
            if rid in self._asked:
                self._asked.remove(rid)
            for fut in self._requests.pop(rid)[1]:
                if not fut.done():
                    fut.set_result({"id": rid, "approved": bool(msg.get("approved"))})
        if self._on_message is not None:
            self._on_message(msg)
        return msg

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- sending ------------------------------------------------------------------------

    async def signal(self, name: str, data: dict[str, Any] | None = None,
                     at: int | None = None) -> int | None:
        """Queue one signal and send it if connected; returns its ``seq`` (``None``: the
        consent does not allow it, so it is counted in ``out_of_scope`` and dropped)."""
        if self.consent is not None and not self._allowed(name):
            self.out_of_scope += 1
            return None
        try:
            message = self.outbox.add(name, dict(data or {}),
                                      self._clock() if at is None else at)
        except SignalTooLarge as exc:
            self.too_large += 1
            self.last_error = f"signal_too_large: {exc}"
            return None
        if self._ready:
            await self._send(message)
        return int(message["seq"])

    def _resend_later(self, delay: float) -> None:
        if self._resender is not None:
            self._resender.cancel()
        self._resender = asyncio.create_task(self._resend(delay))

    async def _resend(self, delay: float) -> None:
        """After ``delay`` s, send everything unacknowledged, oldest first, paced."""
        await asyncio.sleep(delay)
        for message in self.outbox.resend():
            while (wait := self._pacer.wait(frame_cost(message), time.monotonic())) > 0:
                await asyncio.sleep(wait)
            if not await self._send(message):
                return

    async def _send(self, message: dict[str, Any]) -> bool:
        ws = self._ws
        if ws is None:
            return False
        self._pacer.spend(frame_cost(message), time.monotonic())
        try:
            await ws.send(json.dumps(message))
        except websockets.ConnectionClosed:
            return False
        return True

    async def send_raw(self, message: dict[str, Any]) -> bool:
        """Send any protocol message now (``False`` when not connected)."""
        return await self._send(message)

    async def request_recording(self, reason: str, timeout: float = 30.0,
                                request_id: str | None = None) -> dict[str, Any]:
        """Ask to record; await the clinician's ``{"id", "approved"}``. The request is named
        (``request_id`` or ``"rr-"`` + 12 hex) and asked again, with its id, after every
        reconnect until decided: the sidecar answers a decided one with its decision."""
        rid = request_id or "rr-" + secrets.token_hex(6)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests.setdefault(rid, (reason, []))[1].append(fut)
        if self._ready:
            await self._ask(rid)
        return await asyncio.wait_for(fut, timeout)

    async def _ask(self, rid: str) -> None:
        self._asked.append(rid)
        await self._send({"type": "recording.request", "reason": self._requests[rid][0],
                          "id": rid})

    # -- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Await until ``predicate()`` holds (re-checked after every message/connection);
        :class:`ClientError` if the token is refused first."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.refused or predicate())
        if not predicate():
            raise ClientError(f"refused: {self.last_error}")

    async def drained(self, timeout: float = 10.0) -> None:
        """Await until every signal sent so far is acknowledged."""
        await self.wait_for(lambda: not self.outbox.unacked, timeout)
