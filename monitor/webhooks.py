"""Webhook delivery that loses nothing: signed POSTs from a persistent outbox.

An alert is queued for every configured URL in the same transaction that stores it
(:meth:`monitor.store.SqliteStore.append_alert` with ``webhook_urls``), so a crash or restart
between storing and sending loses nothing: :class:`WebhookDelivery` reads due items from the
outbox, POSTs each alert's JSON, and on failure reschedules it with exponential backoff and
jitter. Delivery is at least once; receivers de-duplicate by the ``Sessionguard-Delivery``
header (or the alert's ``session`` + ``seq``).

Each request is signed the way Stripe signs its webhooks::

    Sessionguard-Timestamp: 1700000000
    Sessionguard-Signature: t=1700000000,v1=<hex HMAC-SHA256(secret, "1700000000." + body)>

and receivers check it with :func:`verify_signature`. HTTP goes through a :class:`Transport`
(one async ``send(url, headers, body) -> status``); :class:`HttpTransport` is the real one
(HTTP/1.1 over asyncio streams, TLS for ``https``), tests may pass their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import logging
import random
import ssl
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter

from monitor.store import OutboxItem, target_display
from monitor.store_async import AsyncStore
from signals.errors import AuthError, ConfigError, SessionguardError

__all__ = [
    "DEFAULT_GIVE_UP_MS",
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "Backoff",
    "HttpTransport",
    "Reply",
    "SignatureError",
    "Transport",
    "WebhookDelivery",
    "WebhookError",
    "WebhookTarget",
    "sign",
    "targets_from",
    "verify_signature",
]

SIGNATURE_HEADER = "Sessionguard-Signature"
TIMESTAMP_HEADER = "Sessionguard-Timestamp"
DELIVERY_HEADER = "Sessionguard-Delivery"
_USER_AGENT = "sessionguard-webhook/1"
_MAX_T_DIGITS = 15
_log = logging.getLogger("sessionguard.webhooks")


class WebhookError(SessionguardError):
    """A webhook request could not be made (connection refused, timeout, bad reply)."""


class SignatureError(AuthError):
    """A webhook signature header is missing, malformed, wrong or too old."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                    hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Sessionguard-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_signature(secret: str, header: str | None, body: bytes, now: int | None = None,
                     tolerance_s: int = 300) -> int:
    """Check a ``Sessionguard-Signature`` header against the raw request ``body``.

    ``now`` is epoch ms (default the wall clock). Returns the signed timestamp (unix seconds);
    raises :class:`SignatureError` when the header is missing or malformed, no ``v1`` matches
    (several are allowed, for secret rotation), or the timestamp is more than ``tolerance_s``
    away from ``now`` (a replay).
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError(f"malformed {SIGNATURE_HEADER} header")
        if key == "t":
            # ASCII digits only ('²' is a digit to isdigit, not to int), and no more than a
            # timestamp has (int() refuses past 4300 digits)
            if not (value.isascii() and value.isdigit() and len(value) <= _MAX_T_DIGITS):
                raise SignatureError(f"malformed timestamp in {SIGNATURE_HEADER}")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"{SIGNATURE_HEADER} needs t= and v1=")
    expected = _mac(secret, timestamp, body)
    # compare_digest refuses a str that is not ASCII: such a v1 is no hex digest anyway
    if not any(c.isascii() and hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("webhook signature does not match")
    current = (_wall_ms() if now is None else now) // 1000
    if abs(current - timestamp) > tolerance_s:
        raise SignatureError("webhook timestamp is outside the tolerance (stale or replayed)")
    return timestamp


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """One receiver: where to POST and the secret that signs what is sent there."""

    url: str
    secret: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("a webhook URL must be http:// or https:// with a host")
        if not self.secret:
            raise ConfigError("a webhook target needs a signing secret")

    @property
    def display(self) -> str:
        """Scheme, host and port only: webhook paths often carry secrets."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def targets_from(urls: Sequence[str], secret: str | None) -> list[WebhookTarget]:
    """One :class:`WebhookTarget` per URL, all signed with ``secret`` (a clear
    :class:`~signals.errors.ConfigError` when there are URLs but no secret)."""
    if urls and not secret:
        raise ConfigError("webhook URLs are configured but no webhook secret is set "
                          "(SESSIONGUARD_WEBHOOK_SECRET)")
    return [WebhookTarget(url, secret or "") for url in urls]


@dataclass(frozen=True, slots=True)
class Reply:
    """What a receiver answered, when more than the status matters: its ``Retry-After``
    header (seconds or an HTTP date), if it sent one."""

    status: int
    retry_after: str | None = None


class Transport(Protocol):
    """Sends one POST and returns the HTTP status (an ``int``, or a :class:`Reply` to pass
    on a ``Retry-After``); raises on a network failure."""

    async def send(self, url: str, headers: Mapping[str, str],
                   body: bytes) -> int | Reply: ...


def _retry_after_ms(value: str, now_ms: int) -> int | None:
    """A ``Retry-After`` value (delay seconds, or an HTTP date) as ms from ``now_ms``;
    ``None`` when it is neither."""
    value = value.strip()
    if value.isdigit():
        return int(value[:12]) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        return None
    return max(0, int(when.timestamp() * 1000) - now_ms)


class HttpTransport:
    """Plain HTTP/1.1 POST over asyncio streams (``https`` via :mod:`ssl`), one connection
    per request, no redirects: a 3xx counts as a failure. A 429 or 503 comes back as a
    :class:`Reply` with its ``Retry-After``."""

    def __init__(self, timeout_s: float = 10.0, ssl_context: ssl.SSLContext | None = None,
                 max_reply_bytes: int = 65536) -> None:
        self.timeout_s = timeout_s
        self._ssl = ssl_context
        self._max_reply = max_reply_bytes

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> int | Reply:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookError("webhook URL must be http:// or https://")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        lines = [f"POST {target} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}",
                 "Connection: close"]
        for key, value in headers.items():
            if any(c in key + value for c in "\r\n"):
                raise WebhookError("webhook header contains a line break")
            lines.append(f"{key}: {value}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        context: ssl.SSLContext | None = None
        if secure:
            context = self._ssl or ssl.create_default_context()
        writer: asyncio.StreamWriter | None = None
        retry_after: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    parts.hostname, port, ssl=context, limit=self._max_reply)
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
                if status_line.split(None, 2)[1:2] in ([b"429"], [b"503"]):
                    retry_after = await _read_retry_after(reader)
        except TimeoutError as exc:
            raise WebhookError("webhook receiver timed out") from exc
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise WebhookError(f"webhook receiver unreachable: {exc.__class__.__name__}") from exc
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
        fields = status_line.decode("latin-1").split(None, 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise WebhookError("webhook receiver sent no HTTP status line")
        status = int(fields[1])
        return Reply(status, retry_after) if retry_after is not None else status


async def _read_retry_after(reader: asyncio.StreamReader) -> str | None:
    """The ``Retry-After`` among the reply's header lines (``None`` if absent, or if the
    headers are cut short or too long: the status alone still counts)."""
    try:
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, sep, value = line.decode("latin-1").partition(":")
            if sep and name.strip().lower() == "retry-after":
                return value.strip()
    except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    return None


class Backoff:
    """Exponential backoff with "equal jitter": attempt ``n`` (1-based) waits between half and
    all of ``min(max_ms, base_ms * 2**(n-1))``. ``rng`` is seeded in tests."""

    def __init__(self, base_ms: int = 1000, max_ms: int = 3_600_000,
                 rng: random.Random | None = None) -> None:
        if base_ms <= 0 or max_ms < base_ms:
            raise ConfigError("backoff needs 0 < base <= max")
        self.base_ms, self.max_ms = base_ms, max_ms
        self._rng = rng or random.Random()

    def delay_ms(self, attempts: int) -> int:
        ceiling = min(self.max_ms, self.base_ms << min(max(attempts - 1, 0), 40))
        return ceiling // 2 + int(self._rng.random() * (ceiling - ceiling // 2))


DEFAULT_GIVE_UP_MS = 72 * 3600 * 1000  # three days, as Stripe does


@dataclass(slots=True)
class _Lane:
    """One target's deliveries: its own attempts in flight (at most ``concurrency``) and its
    own wake-up, so a receiver that hangs or fails holds up nothing but itself."""

    target: WebhookTarget
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: dict[int, asyncio.Task[bool]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    #: loop time before which no attempt starts (an outcome could not be stored)
    paused_until: float = 0.0


class WebhookDelivery:
    """POSTs queued alerts to the configured targets until each one is accepted (2xx), or
    until ``give_up_after_ms`` after it was queued (default three days; ``None``: never):
    then it is abandoned, counted in ``sessionguard_webhook_abandoned_total`` and recorded in
    the ledger as a ``delivery`` entry with ``"abandoned": true``.

    Each target is a lane of its own: its due items (oldest first) are tried with at most
    ``concurrency`` requests in flight *to that target*, and a free slot takes the next due
    item at once, without waiting for the others of its batch. A receiver that never answers
    (each request then takes the transport's whole timeout) or keeps failing delays nobody
    else. A ``429`` or ``503`` with ``Retry-After`` (seconds or an HTTP date) is retried then,
    at most the backoff's maximum later (and at least its base).

    When the loop starts (:meth:`start`), items still queued for a URL that is no longer
    configured are abandoned (:meth:`abandon_unconfigured`): a changed URL may be deliberate
    (a rotated key in its query, a receiver retired), so they are not re-sent elsewhere.

    ``clock`` returns epoch ms. ``registry`` (optional) receives
    ``sessionguard_webhook_attempts_total`` and ``sessionguard_webhook_failures_total``;
    ``on_attempt(target_display, ok, status_or_None)`` is called after every attempt, once its
    outcome (delivered, or rescheduled) is committed to the outbox.
    """

    def __init__(
        self,
        store: AsyncStore,
        targets: Sequence[WebhookTarget],
        *,
        transport: Transport | None = None,
        clock: Callable[[], int] = _wall_ms,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        poll_ms: int = 5000,
        concurrency: int = 8,
        batch: int = 100,
        registry: CollectorRegistry | None = None,
        on_attempt: Callable[[str, bool, int | None], None] | None = None,
        give_up_after_ms: int | None = DEFAULT_GIVE_UP_MS,
    ) -> None:
        if concurrency < 1:
            raise ConfigError("webhook concurrency must be at least 1")
        self.store = store
        self.targets = {t.url: t for t in targets}
        self.transport: Transport = transport or HttpTransport()
        self.clock = clock
        self.backoff = backoff or Backoff(rng=rng)
        self.poll_ms = poll_ms
        self.concurrency = concurrency
        self.batch = batch
        self._on_attempt = on_attempt
        self.give_up_after_ms = give_up_after_ms
        self._lanes = {url: _Lane(target) for url, target in self.targets.items()}
        self._task: asyncio.Task[None] | None = None
        self._attempts: Counter | None = None
        self._failures: Counter | None = None
        self._abandoned: Counter | None = None
        if registry is not None:
            self._abandoned = Counter(
                "sessionguard_webhook_abandoned",
                "Webhook items given up after webhooks.give_up_after_hours of failures, or "
                "queued for a URL no longer configured.",
                registry=registry)
            self._attempts = Counter("sessionguard_webhook_attempts",
                                     "Webhook POST attempts.", registry=registry)
            self._failures = Counter("sessionguard_webhook_failures",
                                     "Webhook POST attempts that failed (network or non-2xx).",
                                     registry=registry)

    @property
    def urls(self) -> list[str]:
        return list(self.targets)

    async def enqueue(self, session: str, alert: dict[str, Any]) -> None:
        """Queue ``alert`` (a wire dict with its seq) for every target. Prefer passing
        :attr:`urls` to ``append_alert`` instead: then storing and queueing are atomic."""
        now = self.clock()
        for url in self.targets:
            await self.store.enqueue(session, url, alert, now)
        self.wake()

    def wake(self) -> None:
        """Look at the outbox now (call after queueing alerts)."""
        for lane in self._lanes.values():
            lane.wake.set()

    notify = wake  # the name the server calls after ``append_alert``

    async def abandon_unconfigured(self) -> int:
        """Abandon every item still queued for a URL that is not configured now (each on the
        ledger and in ``sessionguard_webhook_abandoned_total``, with a warning naming only
        the target's scheme, host and port). Returns how many were abandoned."""
        urls = await self.store.abandon_other_targets(
            self.urls, self.clock(), "the webhook URL is no longer configured")
        if self._abandoned is not None and urls:
            self._abandoned.inc(len(urls))
        for display, count in sorted(Tally(target_display(u) for u in urls).items()):
            _log.warning("%d undelivered webhook item(s) for %s abandoned: their URL is no "
                         "longer configured (changed or removed); the alerts stay in the "
                         "audit store", count, display)
        return len(urls)

    async def run_once(self) -> int:
        """Attempt every item due now (up to ``batch`` per target, at most ``concurrency``
        at a time per target, every target at once) and wait for them; return how many
        were delivered. The running loop (:meth:`start`) does not wait like this."""
        delivered = await asyncio.gather(*(self._lane_once(lane)
                                           for lane in self._lanes.values()))
        return sum(delivered)

    async def _lane_once(self, lane: _Lane) -> int:
        items = await self.store.due(self.clock(), [lane.target.url], self.batch,
                                     exclude=lane.in_flight)
        limit = asyncio.Semaphore(self.concurrency)

        async def one(item: OutboxItem) -> bool:
            async with limit:
                return await self._attempt(lane.target, item)

        return sum(await asyncio.gather(*(one(item) for item in items)))

    async def _attempt(self, target: WebhookTarget, item: OutboxItem) -> bool:
        body = item.body.encode()
        now = self.clock()
        timestamp = now // 1000
        headers = {
            "Content-Type": "application/json",
            "User-Agent": _USER_AGENT,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(target.secret, body, timestamp),
            DELIVERY_HEADER: str(item.id),
        }
        status: int | None = None
        retry_after: str | None = None
        error = ""
        try:
            reply = await self.transport.send(item.url, headers, body)
            if isinstance(reply, Reply):
                status, retry_after = reply.status, reply.retry_after
            else:
                status = reply
        except (WebhookError, OSError, TimeoutError) as exc:
            error = str(exc) or exc.__class__.__name__
        except Exception as exc:  # a transport bug must not stop delivery
            error = f"transport failed: {exc.__class__.__name__}"
        ok = status is not None and 200 <= status < 300
        if not ok and not error:
            error = f"HTTP {status}"
        if self._attempts is not None:
            self._attempts.inc()
        if not ok and self._failures is not None:
            self._failures.inc()
        if ok:
            assert status is not None
            await self.store.mark_delivered(item.id, self.clock(), status)
        else:
            now = self.clock()
            delay = self.backoff.delay_ms(item.attempts + 1)
            asked = (_retry_after_ms(retry_after, now)
                     if status in (429, 503) and retry_after else None)
            if asked is not None:  # the receiver said when: then, within our own bounds
                delay = min(self.backoff.max_ms, max(self.backoff.base_ms, asked))
            if (self.give_up_after_ms is not None
                    and now + delay - item.created_at > self.give_up_after_ms):
                # the next try would come after the give-up time: stop here, on the record
                await self.store.abandon(item.id, now, error, status)
                if self._abandoned is not None:
                    self._abandoned.inc()
                _log.warning("webhook to %s abandoned after %d attempts (%s); the alert "
                             "stays in the audit store", target.display, item.attempts + 1,
                             error)
            else:
                await self.store.reschedule(item.id, now + delay, error, status)
                _log.info("webhook to %s failed (%s); attempt %d, retry in %d ms",
                          target.display, error, item.attempts + 1, delay)
        if self._on_attempt is not None:  # after the outcome is committed
            self._on_attempt(target.display, ok, status)
        return ok

    # -- the running loop: one lane per target -----------------------------------------------
    async def _attempt_in_lane(self, lane: _Lane, item: OutboxItem) -> bool:
        try:
            return await self._attempt(lane.target, item)
        except SessionguardError as exc:  # the outcome could not be stored: retried later
            _log.warning("webhook delivery to %s paused: %s", lane.target.display, exc)
        except Exception:
            _log.exception("webhook delivery to %s failed; retrying", lane.target.display)
        # the item is still due: not again at once (a full disk would turn into a POST loop)
        lane.paused_until = asyncio.get_running_loop().time() + self.poll_ms / 1000
        return False

    def _start_attempts(self, lane: _Lane, items: Sequence[OutboxItem]) -> None:
        for item in items:
            task = asyncio.get_running_loop().create_task(self._attempt_in_lane(lane, item))
            lane.in_flight[item.id] = task

            def done(_: asyncio.Task[bool], item_id: int = item.id) -> None:
                lane.in_flight.pop(item_id, None)
                lane.wake.set()  # a slot is free: take the next due item now

            task.add_done_callback(done)

    async def _lane_step(self, lane: _Lane) -> int:
        """Start attempts for the lane's due items while it has free slots; return how long
        to wait (ms) unless woken."""
        paused_s = lane.paused_until - asyncio.get_running_loop().time()
        if paused_s > 0:
            return max(1, int(paused_s * 1000))
        free = self.concurrency - len(lane.in_flight)
        url = [lane.target.url]
        if free > 0:
            items = await self.store.due(self.clock(), url, free, exclude=lane.in_flight)
            self._start_attempts(lane, items)
            free -= len(items)
        if free <= 0:  # full: an attempt that ends wakes the lane
            return self.poll_ms
        next_at = await self.store.next_due_at(url, exclude=lane.in_flight)
        if next_at is None:
            return self.poll_ms
        return max(0, min(self.poll_ms, next_at - self.clock()))

    async def _run_lane(self, lane: _Lane) -> None:
        while True:
            lane.wake.clear()
            try:
                wait_ms = await self._lane_step(lane)
            except SessionguardError as exc:
                _log.warning("webhook delivery to %s paused: %s", lane.target.display, exc)
                wait_ms = self.poll_ms
            except Exception:
                _log.exception("webhook delivery to %s failed; retrying", lane.target.display)
                wait_ms = self.poll_ms
            if wait_ms > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_ms / 1000):
                        await lane.wake.wait()

    async def _run(self) -> None:
        try:
            await self.abandon_unconfigured()
        except SessionguardError as exc:
            _log.warning("webhook items of URLs no longer configured not checked: %s", exc)
        loop = asyncio.get_running_loop()
        for lane in self._lanes.values():
            lane.task = loop.create_task(self._run_lane(lane),
                                         name=f"sessionguard-webhooks {lane.target.display}")
        await asyncio.gather(*(lane.task for lane in self._lanes.values() if lane.task))

    def start(self) -> None:
        """Run the delivery loop as a task of the running event loop: first abandon what is
        queued for URLs no longer configured, then one lane per target."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="sessionguard-webhooks")

    async def stop(self) -> None:
        """Stop the loop; in-flight requests are abandoned and retried after a restart."""
        tasks: list[asyncio.Task[Any]] = []
        if self._task is not None:
            tasks.append(self._task)
            self._task = None
        for lane in self._lanes.values():
            if lane.task is not None:
                tasks.append(lane.task)
                lane.task = None
            tasks.extend(lane.in_flight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
