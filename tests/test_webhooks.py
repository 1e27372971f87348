"""Webhook delivery: signed POSTs to a real local receiver, retries, restarts, signatures."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.store import SqliteStore
from monitor.store_async import AsyncStore
from monitor.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Backoff,
    HttpTransport,
    Reply,
    SignatureError,
    WebhookDelivery,
    WebhookError,
    WebhookTarget,
    sign,
    targets_from,
    verify_signature,
)
from signals.errors import AuthError, ConfigError, StorageError

SECRET = "whsec-test-0123456789"
NOW = 1_700_000_000_000


def _alert(at: int, rule: str = "screen-capture") -> dict[str, object]:
    return {"type": "alert", "id": f"{rule}-{at}", "session": "s1", "participant": "p1",
            "rule": rule, "severity": "critical", "title": "Screen capture",
            "message": "m", "suggested_response": [], "evidence": [], "at": at}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class Receiver:
    """A real HTTP/1.1 endpoint on 127.0.0.1 that answers with scripted statuses."""

    statuses: list[int] = field(default_factory=list)
    requests: asyncio.Queue[Received] = field(default_factory=asyncio.Queue)
    server: asyncio.Server | None = None
    port: int = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        status = self.statuses.pop(0) if self.statuses else 200
        writer.write(f"HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\n"
                     "Connection: close\r\n\r\nok".encode())
        await writer.drain()
        writer.close()
        await self.requests.put(Received(request_line.split()[1], headers, body, status))

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def next(self) -> Received:
        return await asyncio.wait_for(self.requests.get(), 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AsyncStore]:
    s = AsyncStore(tmp_path / "audit.db")
    yield s
    await s.aclose()


class Attempts:
    """``on_attempt`` hook that lets a test await attempts instead of sleeping."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bool, int | None]] = asyncio.Queue()

    def __call__(self, target: str, ok: bool, status: int | None) -> None:
        self.queue.put_nowait((target, ok, status))

    async def wait(self, ok: bool) -> int:
        """Await attempts until one with outcome ``ok``; return how many were seen."""
        seen = 0
        while True:
            _target, outcome, _status = await asyncio.wait_for(self.queue.get(), 20)
            seen += 1
            if outcome == ok:
                return seen


def _fast(seed: int = 7) -> Backoff:
    return Backoff(base_ms=20, max_ms=200, rng=random.Random(seed))


# -- signatures ---------------------------------------------------------------------------

def test_signature_good_bad_stale() -> None:
    body = b'{"type":"alert","seq":1}'
    t = NOW // 1000
    header = sign(SECRET, body, t)
    assert header.startswith(f"t={t},v1=")
    assert verify_signature(SECRET, header, body, now=NOW + 299_000) == t
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature("wrong-secret", header, body, now=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, header, body + b" ", now=NOW)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, header.replace(f"t={t}", f"t={t + 1}"), body, now=NOW)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, header, body, now=NOW + 301_000)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, header, body, now=NOW - 301_000)
    assert verify_signature(SECRET, header, body, now=NOW + 3_600_000, tolerance_s=7200) == t


# a header comes from the network: unicode digits (int() refuses '²'), a v1 that is not ASCII
# (compare_digest refuses it) or a timestamp past int()'s 4300 digits are malformed, not a crash
MALFORMED = [None, "", "garbage", "t=abc,v1=00", "v1=00", "t=5", "t=5,v1", "t=\u00b2,v1=00",
             f"t={NOW // 1000},v1=\u00e9\u00e9", "t=" + "9" * 5000 + ",v1=00",
             "t=\u0661\u0667\u0660\u0660,v1=00", f"t={NOW // 1000},v1=\udc80"]


@pytest.mark.parametrize("header", MALFORMED)
def test_signature_malformed(header: str | None) -> None:
    with pytest.raises(SignatureError):
        verify_signature(SECRET, header, b"{}", now=NOW)


def _readme_verify() -> Any:
    """The standard-library ``verify`` the README gives receivers, as written there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("Without it, the whole check is a few lines of standard library:")
    code = readme[readme.index("```python\n", start) + 10:]
    code = code[:code.index("```")]
    scope: dict[str, Any] = {}
    exec(compile(code, "<README.md receiver snippet>", "exec"), scope)
    return scope["verify"]


@pytest.mark.parametrize("header", MALFORMED)
def test_the_readme_receiver_snippet_says_false_to_a_malformed_header(
        header: str | None) -> None:
    if header is not None:  # the snippet reads the wall clock: a fresh t reaches the compare
        header = header.replace(str(NOW // 1000), str(int(time.time())))
    assert _readme_verify()(SECRET, header, b"{}") is False


def test_the_readme_receiver_snippet_accepts_a_real_signature_and_nothing_else() -> None:
    verify, body, t = _readme_verify(), b'{"type":"alert","seq":1}', int(time.time())
    assert verify(SECRET, sign(SECRET, body, t), body) is True
    assert verify(SECRET, f"{sign('old', body, t)},{sign(SECRET, body, t)}", body) is True
    assert verify("other", sign(SECRET, body, t), body) is False
    assert verify(SECRET, sign(SECRET, body, t), body + b" ") is False
    assert verify(SECRET, sign(SECRET, body, t - 301), body) is False


def test_signature_accepts_any_v1_during_rotation() -> None:
    body, t = b"{}", NOW // 1000
    old = sign("old-secret", body, t).split(",")[1]
    header = f"{sign(SECRET, body, t)},{old}"
    assert verify_signature(SECRET, header, body, now=NOW) == t
    assert verify_signature("old-secret", header, body, now=NOW) == t
    with pytest.raises(AuthError):  # SignatureError is an AuthError (401)
        verify_signature("third", header, body, now=NOW)


# -- backoff and the schedule (in memory, injected clock) ---------------------------------

def test_backoff_is_exponential_jittered_capped_and_seeded() -> None:
    a, b = Backoff(1000, 60_000, random.Random(3)), Backoff(1000, 60_000, random.Random(3))
    delays = [a.delay_ms(n) for n in range(1, 12)]
    assert delays == [b.delay_ms(n) for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(60_000, 1000 * 2 ** (n - 1))
        assert ceiling // 2 <= d <= ceiling
    assert delays[-1] <= 60_000 and delays[5] > delays[0]
    with pytest.raises(ConfigError):
        Backoff(0, 10)


class ScriptedTransport:
    """The MockTransport idea: answers from a script, records what was sent."""

    def __init__(self, script: list[int | Exception]) -> None:
        self.script = script
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
        self.sent.append((url, dict(headers), body))
        step = self.script.pop(0) if self.script else 200
        if isinstance(step, Exception):
            raise step
        return step


async def test_retry_schedule_with_an_injected_clock(tmp_path: Path) -> None:
    clock = [NOW]
    store = AsyncStore(tmp_path / "audit.db", clock=lambda: clock[0])
    registry = CollectorRegistry()
    transport = ScriptedTransport([WebhookError("refused"), 503, RuntimeError("bug"), 204])
    backoff = Backoff(1000, 60_000, random.Random(1))
    expected = Backoff(1000, 60_000, random.Random(1))
    delivery = WebhookDelivery(store, [WebhookTarget("http://hooks.example/a", SECRET)],
                               transport=transport, clock=lambda: clock[0], backoff=backoff,
                               registry=registry)
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    for attempt in range(1, 4):
        assert await delivery.run_once() == 0
        (item,) = await store.outbox("s1")
        assert item["attempts"] == attempt
        assert item["next_at"] == clock[0] + expected.delay_ms(attempt)
        clock[0] = item["next_at"] - 1
        assert await delivery.run_once() == 0 and len(transport.sent) == attempt  # not due yet
        clock[0] += 1
    assert await delivery.run_once() == 1
    assert await store.pending() == 0
    assert registry.get_sample_value("sessionguard_webhook_attempts_total") == 4
    assert registry.get_sample_value("sessionguard_webhook_failures_total") == 3
    _url, headers, body = transport.sent[-1]
    assert json.loads(body)["seq"] == 1
    assert verify_signature(SECRET, headers[SIGNATURE_HEADER], body, now=clock[0])
    assert headers[TIMESTAMP_HEADER] == str(clock[0] // 1000)
    deliveries = [e for e in await store.entries("s1") if e["kind"] == "delivery"]
    assert deliveries[0]["body"]["attempts"] == 4 and deliveries[0]["body"]["status"] == 204
    await store.aclose()


async def test_a_receiver_down_for_too_long_is_given_up_on_the_record(tmp_path: Path) -> None:
    clock = [NOW]
    store = AsyncStore(tmp_path / "audit.db", clock=lambda: clock[0])
    registry = CollectorRegistry()
    transport = ScriptedTransport([503] * 50)
    delivery = WebhookDelivery(store, [WebhookTarget("http://hooks.example/a", SECRET)],
                               transport=transport, clock=lambda: clock[0],
                               backoff=Backoff(1000, 60_000, random.Random(1)),
                               registry=registry, give_up_after_ms=10 * 60_000)
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    for _ in range(50):
        await delivery.run_once()
        (item,) = await store.outbox("s1")
        if item["abandoned_at"] is not None:
            break
        assert item["next_at"] - NOW <= 10 * 60_000  # never scheduled past the give-up time
        clock[0] = item["next_at"]
    assert item["abandoned_at"] == clock[0] and item["delivered_at"] is None
    tries = len(transport.sent)
    assert item["attempts"] == tries and 5 <= tries < 50
    # never tried again, not counted as pending, and on the record
    clock[0] += 3_600_000
    assert await delivery.run_once() == 0 and len(transport.sent) == tries
    assert await store.pending() == 0 and await store.next_due_at(delivery.urls) is None
    assert registry.get_sample_value("sessionguard_webhook_abandoned_total") == 1
    (entry,) = [e for e in await store.entries("s1") if e["kind"] == "delivery"]
    assert entry["body"]["abandoned"] is True and entry["body"]["status"] == 503
    assert entry["body"]["target"] == "http://hooks.example"
    assert (await store.verify("s1")).ok
    # the alert itself stays: a clinician resuming still gets it
    assert [a["seq"] for a in await store.alerts_after("s1", 0)] == [1]
    await store.aclose()


def test_an_older_database_gains_the_abandoned_column(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with SqliteStore(db) as s:
        s.enqueue("s1", "http://hooks.example/a", {"seq": 1}, NOW)
    raw = sqlite3.connect(db)
    with raw:  # as created before abandoned_at existed
        raw.execute("DROP INDEX outbox_due")
        raw.execute("ALTER TABLE outbox DROP COLUMN abandoned_at")
    raw.close()
    with SqliteStore(db) as s:
        assert [i.id for i in s.due(NOW)] == [1]
        assert s.outbox()[0]["abandoned_at"] is None


async def test_each_target_gets_its_own_signature(tmp_path: Path) -> None:
    store = AsyncStore(tmp_path / "audit.db", clock=lambda: NOW)
    transport = ScriptedTransport([])
    targets = [WebhookTarget("http://a.example/x", "secret-a"),
               WebhookTarget("https://b.example/y", "secret-b")]
    delivery = WebhookDelivery(store, targets, transport=transport, clock=lambda: NOW)
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    assert await delivery.run_once() == 2
    by_url = {url: (h, b) for url, h, b in transport.sent}
    for target in targets:
        headers, body = by_url[target.url]
        verify_signature(target.secret, headers[SIGNATURE_HEADER], body, now=NOW)
        with pytest.raises(SignatureError):
            other = "secret-b" if target.secret == "secret-a" else "secret-a"
            verify_signature(other, headers[SIGNATURE_HEADER], body, now=NOW)
    await store.aclose()


# -- real HTTP --------------------------------------------------------------------------

async def test_delivers_to_a_real_receiver(store: AsyncStore, receiver: Receiver) -> None:
    url = f"http://127.0.0.1:{receiver.port}/hooks/sessionguard?x=1"
    attempts = Attempts()
    delivery = WebhookDelivery(store, targets_from([url], SECRET), backoff=_fast(),
                               on_attempt=attempts)
    delivery.start()
    seq = await store.append_alert("s1", _alert(NOW), delivery.urls)
    delivery.notify()
    got = await receiver.next()
    assert got.path == "/hooks/sessionguard?x=1"
    assert got.headers["content-type"] == "application/json"
    assert json.loads(got.body) == {**_alert(NOW), "seq": seq}
    t = verify_signature(SECRET, got.headers[SIGNATURE_HEADER.lower()], got.body)
    assert got.headers[TIMESTAMP_HEADER.lower()] == str(t)
    assert got.headers[DELIVERY_HEADER.lower()].isdigit()
    assert await attempts.wait(ok=True) == 1
    assert await store.pending() == 0
    await delivery.stop()


async def test_failed_status_is_retried(store: AsyncStore, receiver: Receiver) -> None:
    receiver.statuses = [500, 302]
    attempts = Attempts()
    delivery = WebhookDelivery(store, targets_from([f"http://127.0.0.1:{receiver.port}/"],
                                                   SECRET), backoff=_fast(), on_attempt=attempts,
                               give_up_after_ms=None)  # alerts dated NOW (2023), wall clock
    delivery.start()
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    delivery.notify()
    assert await attempts.wait(ok=True) == 3
    statuses = [(await receiver.next()).status for _ in range(3)]
    assert statuses == [500, 302, 200]
    await delivery.stop()


async def test_receiver_down_then_back_loses_nothing(store: AsyncStore) -> None:
    port = _free_port()
    attempts = Attempts()
    registry = CollectorRegistry()
    delivery = WebhookDelivery(store, targets_from([f"http://127.0.0.1:{port}/in"], SECRET),
                               backoff=_fast(), on_attempt=attempts, registry=registry,
                               give_up_after_ms=None)  # alerts dated NOW (2023), wall clock
    delivery.start()
    for i in range(3):
        await store.append_alert("s1", _alert(NOW + i), delivery.urls)
    delivery.notify()
    failures = 0
    while failures < 6:  # each alert failed at least once (and some twice)
        _t, ok, status = await asyncio.wait_for(attempts.queue.get(), 20)
        assert not ok and status is None
        failures += 1
    back = Receiver()
    await back.start(port)
    try:
        seqs = sorted([json.loads((await back.next()).body)["seq"] for _ in range(3)])
        assert seqs == [1, 2, 3]
        while await store.pending():
            await attempts.wait(ok=True)
        assert (registry.get_sample_value("sessionguard_webhook_failures_total") or 0) >= 6
        delivered = [e["body"]["seq"] for e in await store.entries("s1")
                     if e["kind"] == "delivery"]
        assert sorted(delivered) == [1, 2, 3]
        assert (await store.verify("s1")).ok
    finally:
        await delivery.stop()
        await back.stop()


async def test_restart_from_the_same_database_delivers_the_backlog(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    port = _free_port()
    url = f"http://127.0.0.1:{port}/in"
    # First life: the receiver is down; one alert fails, another is stored but never tried.
    first_store = AsyncStore(db)
    attempts = Attempts()
    first = WebhookDelivery(first_store, targets_from([url], SECRET), backoff=_fast(),
                            on_attempt=attempts, give_up_after_ms=None)  # alerts dated 2023
    await first_store.append_alert("s1", _alert(NOW), first.urls)
    assert await first.run_once() == 0
    await first_store.append_alert("s1", _alert(NOW + 1), first.urls)
    await first.stop()
    await first_store.aclose()
    # Second life: new objects on the same file, receiver up.
    receiver = Receiver()
    await receiver.start(port)
    second_store = AsyncStore(db)
    attempts = Attempts()
    second = WebhookDelivery(second_store, targets_from([url], SECRET), backoff=_fast(),
                             on_attempt=attempts, give_up_after_ms=None)
    second.start()
    try:
        got = sorted([json.loads((await receiver.next()).body)["seq"] for _ in range(2)])
        assert got == [1, 2]
        while await second_store.pending():
            await attempts.wait(ok=True)
        rows = await second_store.outbox("s1")
        assert [r["attempts"] for r in rows] == [2, 1]
    finally:
        await second.stop()
        await second_store.aclose()
        await receiver.stop()


async def test_run_once_leaves_targets_not_configured_any_more_alone(
        store: AsyncStore) -> None:
    transport = ScriptedTransport([])
    await store.append_alert("s1", _alert(NOW), ["http://removed.example/x"])
    delivery = WebhookDelivery(store, [WebhookTarget("http://kept.example/y", SECRET)],
                               transport=transport, clock=lambda: NOW)
    assert await delivery.run_once() == 0 and transport.sent == []
    await delivery.enqueue("s1", {**_alert(NOW), "seq": 1})
    assert await delivery.run_once() == 1
    assert [u for u, _h, _b in transport.sent] == ["http://kept.example/y"]
    assert await store.pending() == 1  # run_once does not touch the removed target's item


async def test_items_of_a_changed_url_are_abandoned_on_the_record_at_start(
        store: AsyncStore, receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    """A rotated ?key= in a webhook URL: what was queued for the old URL is abandoned when
    the loop starts (ledger, metric, a warning without the URL's secrets), not stranded."""
    old = f"http://127.0.0.1:{receiver.port}/hook?key=OLD-s3cret"
    new = f"http://127.0.0.1:{receiver.port}/hook?key=NEW-s3cret"
    await store.append_alert("s1", _alert(NOW), [old])
    registry = CollectorRegistry()
    attempts = Attempts()
    delivery = WebhookDelivery(store, targets_from([new], SECRET), backoff=_fast(),
                               registry=registry, on_attempt=attempts)
    caplog.set_level("WARNING", logger="sessionguard.webhooks")
    delivery.start()
    try:
        await store.append_alert("s1", _alert(NOW + 1), delivery.urls)
        delivery.notify()
        got = await receiver.next()  # the new URL still gets what is queued for it
        assert got.path == "/hook?key=NEW-s3cret" and json.loads(got.body)["seq"] == 2
        await attempts.wait(ok=True)
    finally:
        await delivery.stop()
    rows = {r["seq"]: r for r in await store.outbox("s1")}
    assert rows[1]["abandoned_at"] is not None and rows[1]["delivered_at"] is None
    assert rows[2]["delivered_at"] is not None and await store.pending() == 0
    assert registry.get_sample_value("sessionguard_webhook_abandoned_total") == 1
    entries = [e["body"] for e in await store.entries("s1") if e["kind"] == "delivery"]
    assert {"seq": 1, "abandoned": True, "target": f"http://127.0.0.1:{receiver.port}",
            "error": "the webhook URL is no longer configured"}.items() <= entries[0].items()
    warnings = [r.getMessage() for r in caplog.records]
    assert any("no longer configured" in w for w in warnings)
    assert not any("s3cret" in w or "/hook" in w for w in warnings)
    assert (await store.verify("s1")).ok
    # a second start finds nothing more to abandon
    assert await delivery.abandon_unconfigured() == 0


# -- one target never delays another ------------------------------------------------------

async def test_a_hung_receiver_does_not_delay_another_target(store: AsyncStore,
                                                            receiver: Receiver) -> None:
    """Receiver A accepts and never answers (each request takes the transport's whole
    timeout); B is healthy. B gets every alert at once, queued before or after A hung."""
    release = asyncio.Event()
    hung = asyncio.Queue[int]()

    async def never_answers(reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        await hung.put(1)
        await release.wait()
        writer.close()

    server = await asyncio.start_server(never_answers, "127.0.0.1", 0)
    a = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/a"
    b = f"http://127.0.0.1:{receiver.port}/b"
    timeout_s = 8.0
    delivery = WebhookDelivery(store, targets_from([a, b], SECRET),
                               transport=HttpTransport(timeout_s=timeout_s), concurrency=2,
                               backoff=_fast(), give_up_after_ms=None)
    for i in range(4):  # more than A can have in flight: its lane is full
        await store.append_alert("s1", _alert(NOW + i), delivery.urls)
    loop = asyncio.get_running_loop()
    started = loop.time()
    delivery.start()
    try:
        seqs = [json.loads((await asyncio.wait_for(receiver.next(), timeout_s / 2)).body)["seq"]
                for _ in range(4)]
        assert sorted(seqs) == [1, 2, 3, 4]
        for _ in range(2):  # A has both of its slots hung now
            await asyncio.wait_for(hung.get(), timeout_s / 2)
        await store.append_alert("s1", _alert(NOW + 9), delivery.urls)
        delivery.notify()
        late = await asyncio.wait_for(receiver.next(), timeout_s / 2)
        assert json.loads(late.body)["seq"] == 5
        assert loop.time() - started < timeout_s  # none of it waited for A's timeout
        assert hung.empty()  # A is not sent more than its concurrency
    finally:
        await delivery.stop()
        release.set()
        server.close()
        await server.wait_closed()


class _UnwritableOutcomes(AsyncStore):
    """A store that cannot record delivery outcomes (a full disk, say)."""

    async def mark_delivered(self, item_id: int, now: int, status: int) -> None:
        raise StorageError("audit store write failed: database or disk is full")


async def test_an_outcome_that_cannot_be_stored_pauses_the_target(tmp_path: Path) -> None:
    """The item stays due, but is not POSTed again at once: that would loop."""
    store = _UnwritableOutcomes(tmp_path / "audit.db")
    sent: asyncio.Queue[float] = asyncio.Queue()

    class Recording:
        async def send(self, url: str, headers: Mapping[str, str], body: bytes) -> int:
            sent.put_nowait(asyncio.get_running_loop().time())
            return 200

    delivery = WebhookDelivery(store, [WebhookTarget("http://hooks.example/a", SECRET)],
                               transport=Recording(), poll_ms=300)
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    delivery.start()
    try:
        first = await asyncio.wait_for(sent.get(), 10)
        second = await asyncio.wait_for(sent.get(), 10)
        assert second - first >= 0.25
    finally:
        await delivery.stop()
        await store.aclose()


# -- Retry-After --------------------------------------------------------------------------

@pytest.mark.parametrize(("reply", "delay_ms"), [
    (Reply(429, "7"), 7_000),
    (Reply(503, " 12 "), 12_000),
    (Reply(429, "Tue, 14 Nov 2023 22:13:40 GMT"), 20_000),  # NOW + 20 s as an HTTP date
    (Reply(429, "999999"), 60_000),  # at most the backoff's maximum
    (Reply(429, "0"), 1_000),  # at least its base: never a tight loop
    (Reply(429, "Tue, 14 Nov 2023 22:00:00 GMT"), 1_000),  # a date already past
])
async def test_retry_after_is_honoured_within_the_backoff_bounds(
        tmp_path: Path, reply: Reply, delay_ms: int) -> None:
    store = AsyncStore(tmp_path / "audit.db", clock=lambda: NOW)
    transport = ScriptedTransport([reply])
    delivery = WebhookDelivery(store, [WebhookTarget("http://hooks.example/a", SECRET)],
                               transport=transport, clock=lambda: NOW,
                               backoff=Backoff(1000, 60_000, random.Random(1)))
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    assert await delivery.run_once() == 0
    (item,) = await store.outbox("s1")
    assert item["next_at"] - NOW == delay_ms and item["last_status"] == reply.status
    await store.aclose()


@pytest.mark.parametrize("reply", [Reply(429, "soon"), Reply(500, "7"), 429])
async def test_without_a_usable_retry_after_the_backoff_applies(tmp_path: Path,
                                                                reply: Reply | int) -> None:
    store = AsyncStore(tmp_path / "audit.db", clock=lambda: NOW)
    delivery = WebhookDelivery(store, [WebhookTarget("http://hooks.example/a", SECRET)],
                               transport=ScriptedTransport([reply]), clock=lambda: NOW,
                               backoff=Backoff(1000, 60_000, random.Random(1)))
    await store.append_alert("s1", _alert(NOW), delivery.urls)
    assert await delivery.run_once() == 0
    (item,) = await store.outbox("s1")
    assert item["next_at"] - NOW == Backoff(1000, 60_000, random.Random(1)).delay_ms(1)
    await store.aclose()


async def test_http_transport_passes_on_retry_after() -> None:
    replies = [b"HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\nretry-after:  30\r\n\r\n",
               b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nRetry-After: 30\r\n\r\n",
               b"HTTP/1.1 429 Too Many\r\nX: " + b"y" * 70_000 + b"\r\n\r\n"]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(replies.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    transport = HttpTransport(timeout_s=5)
    try:
        assert await transport.send(url, {}, b"{}") == Reply(429, "30")
        assert await transport.send(url, {}, b"{}") == 503
        assert await transport.send(url, {}, b"{}") == 200
        assert await transport.send(url, {}, b"{}") == 429  # headers too long: status only
    finally:
        server.close()
        await server.wait_closed()


# -- the HTTP transport's failure modes ---------------------------------------------------

async def test_transport_failures_are_webhook_errors() -> None:
    transport = HttpTransport(timeout_s=0.5)
    with pytest.raises(WebhookError, match="unreachable"):
        await transport.send(f"http://127.0.0.1:{_free_port()}/", {}, b"{}")
    with pytest.raises(WebhookError, match="http"):
        await transport.send("ftp://127.0.0.1/", {}, b"{}")
    with pytest.raises(WebhookError, match="line break"):
        await transport.send("http://127.0.0.1:1/", {"X": "a\r\nInjected: 1"}, b"{}")

    hang = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await hang.wait()
        writer.close()

    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n")
        await writer.drain()
        writer.close()

    for handler, needle in ((silent, "timed out"), (rude, "status line")):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(WebhookError, match=needle):
                await transport.send(f"http://127.0.0.1:{port}/", {}, b"{}")
        finally:
            hang.set()
            server.close()
            await server.wait_closed()


def test_target_validation() -> None:
    with pytest.raises(ConfigError):
        WebhookTarget("file:///etc/passwd", SECRET)
    with pytest.raises(ConfigError):
        WebhookTarget("http://h/x", "")
    with pytest.raises(ConfigError, match="SESSIONGUARD_WEBHOOK_SECRET"):
        targets_from(["http://h/x"], None)
    assert targets_from([], None) == []
    assert WebhookTarget("https://u:p@h.example:8443/s3cret", SECRET).display == \
        "https://h.example:8443"


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_https_receiver(store: AsyncStore, tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    receiver = Receiver()
    receiver.server = await asyncio.start_server(receiver._handle, "127.0.0.1", 0,
                                                 ssl=server_ctx)
    port = receiver.server.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/tls"
    try:
        # An untrusted certificate is a failed attempt, not a crash.
        with pytest.raises(WebhookError):
            await HttpTransport(timeout_s=5).send(url, {}, b"{}")
        trusting = HttpTransport(timeout_s=5, ssl_context=ssl.create_default_context(
            cafile=str(cert)))
        delivery = WebhookDelivery(store, targets_from([url], SECRET), transport=trusting)
        await store.append_alert("s1", _alert(NOW), delivery.urls)
        assert await delivery.run_once() == 1
        got = await receiver.next()
        assert got.path == "/tls" and json.loads(got.body)["seq"] == 1
        verify_signature(SECRET, got.headers[SIGNATURE_HEADER.lower()], got.body)
    finally:
        await receiver.stop()
