"""The shared real-browser harness: Debian's ``/usr/bin/chromium``, headless.

Everything here follows /work/shared/BROWSER-TESTING.md (what was measured on these
machines). Import it from any test (``from tests.browser.harness import ...``) or use the
fixtures of ``tests/browser/conftest.py``.

Two ways to drive Chromium
--------------------------
* **Playwright** (most tests): :func:`playwright_context` is an async context manager around
  ``launch_persistent_context(profile_dir, executable_path="/usr/bin/chromium", ...)`` with the
  base flags, and optionally Chromium's fake camera/microphone (``fake_media=True``), a y4m file
  as camera (``video_file=``) and a wav file as microphone (``audio_file=``)::

      async with playwright_context(tmp_path / "profile", fake_media=True) as ctx:
          page = await ctx.new_page()
          await page.goto(site.url("call.html"))

  Under Playwright a page always reports ``visibilityState == "visible"``; for focus, turn
  off focus emulation with :func:`disable_focus_emulation` and ``bring_to_front()`` another page.

* **Plain CDP** (visibility tests): :class:`CdpBrowser` starts Chromium itself with
  ``--remote-debugging-port=0``, reads the port from ``DevToolsActivePort`` in the profile and
  talks CDP over a ``websockets`` client. ``await browser.new_page(url)`` returns a
  :class:`CdpPage` (``evaluate``, ``wait_for``); ``await browser.new_page(other)`` opens a
  foreground tab, which hides the first one (``visibilitychange`` → hidden);
  ``await page.activate()`` brings it back::

      async with CdpBrowser.launch(tmp_path / "cdp") as browser:
          page = await browser.new_page(site.url("call.html"))
          await page.wait_for("window.ready === true")

A page on another origin
------------------------
:class:`StaticSite` serves a directory over HTTP on ``127.0.0.1`` (a random port) from a
thread: the test page lives there, on a DIFFERENT origin from the sidecar, as it will in
production (the page imports ``http://127.0.0.1:<sidecar>/sdk/sessionguard.js``).
``site.add("page.html", text)`` writes a file; ``site.url("page.html")`` is its address.
:func:`sdk_page` builds a minimal call page that imports the SDK and exposes what it saw on
``window.sg`` (``events``, ``statuses``, ``consents``, ``guard``).

Media files
-----------
:func:`write_y4m` and :func:`write_wav` write the capture files in the test (never commit
them): ``YUV4MPEG2 W320 H240 F<fps>:1 Ip A1:1 C420jpeg``; 1 s at 10 fps is about 1.1 MB.

Loopback WebRTC
---------------
Chromium leaves loopback out of its ICE candidates unless it gets
``--allow-loopback-in-peer-connection`` (added by ``loopback_webrtc=True``, the default), so
tests work on a host whose only interface is ``lo``.

A live sidecar
--------------
``async with live_sidecar(tmp_path / "audit.db") as sc:`` runs the real
:class:`monitor.server.Sidecar` (default config and rules, a SQLite store) on 127.0.0.1 and
yields a :class:`LiveSidecar`: ``sc.ws_url``, ``sc.sdk_url``, ``sc.token(session, participant,
role, consent)`` and ``sc.clinician(session)`` (a websockets client). Enter it again with
``port=sc.port`` and the same db to simulate a restart.

Waiting
-------
Never sleep for synchronisation: ``page.wait_for_function`` (Playwright),
:meth:`CdpPage.wait_for` (CDP) and :func:`recv_until` (a websockets client) await a condition
with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import itertools
import json
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import websockets

from tests.media.corpus_audio import write_wav as write_samples

__all__ = [
    "BASE_FLAGS",
    "CHROMIUM",
    "FAKE_MEDIA_FLAGS",
    "FULL",
    "RECORD_SENT_FRAMES",
    "CdpBrowser",
    "CdpError",
    "CdpPage",
    "LiveSidecar",
    "StaticSite",
    "chromium_args",
    "disable_focus_emulation",
    "live_sidecar",
    "playwright_context",
    "record_in_page",
    "recv_until",
    "sdk_page",
    "stored_signals",
    "wait_stored",
    "write_wav",
    "write_y4m",
]

CHROMIUM = "/usr/bin/chromium"

BASE_FLAGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

FAKE_MEDIA_FLAGS: tuple[str, ...] = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)


def chromium_args(
    *,
    fake_media: bool = False,
    video_file: Path | None = None,
    audio_file: Path | None = None,
    loopback_webrtc: bool = True,
    extra: Iterable[str] = (),
) -> list[str]:
    """The command-line flags for one launch (without profile and debugging port)."""
    args = list(BASE_FLAGS)
    if fake_media or video_file or audio_file:
        args += FAKE_MEDIA_FLAGS
    if video_file is not None:
        args.append(f"--use-file-for-fake-video-capture={video_file}")
    if audio_file is not None:
        args.append(f"--use-file-for-fake-audio-capture={audio_file}")
    if loopback_webrtc:
        args.append("--allow-loopback-in-peer-connection")
    args += list(extra)
    return args


# --------------------------------------------------------------------------- media files


def write_y4m(
    path: Path,
    seconds: float = 1.0,
    *,
    width: int = 320,
    height: int = 240,
    fps: int = 10,
    frame: Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """Write a 4:2:0 y4m file. ``frame(i)`` returns the (Y, U, V) planes of frame ``i``
    (uint8, U/V at half size); the default is a grey image with a moving bright square."""
    if width % 2 or height % 2:
        raise ValueError("y4m 4:2:0 needs even width and height")

    def default(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = np.full((height, width), 110, np.uint8)
        x0 = (i * 8) % max(1, width - 40)
        y[height // 3 : height // 3 + 40, x0 : x0 + 40] = 230
        u = np.full((height // 2, width // 2), 128, np.uint8)
        return y, u, u.copy()

    make = frame or default
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for i in range(max(1, round(seconds * fps))):
            y, u, v = make(i)
            out.write(b"FRAME\n")
            for plane in (y, u, v):
                out.write(np.ascontiguousarray(plane, dtype=np.uint8).tobytes())
    return path


def write_wav(
    path: Path,
    seconds: float = 1.0,
    *,
    rate: int = 48000,
    freq: float = 440.0,
    amplitude: float = 0.2,
    noise: float = 0.01,
    seed: int = 7,
) -> Path:
    """Write a mono 16-bit wav: a sine plus a little seeded noise (a real room is never
    digitally silent)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    samples = amplitude * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)
    return write_samples(path, samples, rate)


# --------------------------------------------------------------------------- static site


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class StaticSite:
    """A directory served over HTTP on 127.0.0.1 (random port) from a daemon thread."""

    def __init__(self, root: Path | None = None, host: str = "127.0.0.1") -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="sg-site-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, name: str = "") -> str:
        return f"{self.origin}/{name.lstrip('/')}"

    def add(self, name: str, text: str) -> str:
        """Write ``name`` (relative to the site root) and return its URL."""
        target = self.root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return self.url(name)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> StaticSite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def sdk_page(
    sdk_url: str,
    ws_url: str,
    token: str,
    *,
    before: str = "",
    after: str = "",
    connect_options: str = "",
    pre_connect: str = "",
) -> str:
    """A minimal call page on the test site. It imports the SDK first (the wrappers are
    installed at import time), connects, and records everything on ``window.sg``:
    ``events`` (every onStatus/onConsent/onNotice call as ``[kind, value]``), ``statuses``,
    ``consents``, ``guard`` and ``ready`` (true once ``connect`` resolved). ``before`` is a
    classic script run before the module (e.g. an init script), ``pre_connect`` module code
    run after the import and before ``connect``, ``after`` module code run after connect
    (``guard`` is in scope). ``connect_options`` is extra object-literal text
    for connect (e.g. ``"onNotice: () => true,"``)."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sessionguard test call</title>
<script>window.sg = {{events: [], statuses: [], consents: [], ready: false}};</script>
<script>{before}</script>
<script type="module">
import {{ connect }} from {json.dumps(sdk_url)};
const sg = window.sg;
{pre_connect}
const guard = await connect({{
  url: {json.dumps(ws_url)}, token: {json.dumps(token)},
  onStatus: (s) => {{ sg.statuses.push(s); sg.events.push(["status", s]); }},
  onConsent: (c) => {{ sg.consents.push(c); sg.events.push(["consent", c]); }},
  {connect_options}
}});
sg.guard = guard;
sg.ready = true;
{after}
</script></head>
<body><h1>call</h1><button id="go">go</button><video id="v" muted playsinline></video></body></html>
"""


# --------------------------------------------------------------------------- Playwright


@contextlib.asynccontextmanager
async def playwright_context(
    profile_dir: Path,
    *,
    fake_media: bool = False,
    video_file: Path | None = None,
    audio_file: Path | None = None,
    extra_args: Iterable[str] = (),
    **options: Any,
) -> AsyncIterator[Any]:
    """A Playwright ``BrowserContext`` on Debian's Chromium, headless, fresh profile.

    ``options`` go to ``launch_persistent_context`` (e.g. ``permissions=["camera"]``,
    ``no_viewport=True`` for ``screen`` change events)."""
    from playwright.async_api import async_playwright

    Path(profile_dir).mkdir(parents=True, exist_ok=True)
    args = chromium_args(fake_media=fake_media, video_file=video_file, audio_file=audio_file,
                         extra=extra_args)
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=args, **options
        )
        try:
            yield context
        finally:
            with contextlib.suppress(Exception):
                await context.close()


_RECORD = """async ([constraints, options, ms]) => {
  const stream = await navigator.mediaDevices.getUserMedia(constraints);
  const rec = new MediaRecorder(stream, options);
  const parts = [];
  rec.ondataavailable = (e) => parts.push(e.data);
  const stopped = new Promise((resolve) => { rec.onstop = resolve; });
  rec.start(500);
  await new Promise((resolve) => setTimeout(resolve, ms));
  rec.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  const bytes = new Uint8Array(await new Blob(parts).arrayBuffer());
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}"""


async def record_in_page(page: Any, constraints: dict[str, Any], seconds: float,
                         **options: Any) -> bytes:
    """What ``MediaRecorder`` (``options``: ``mimeType``, ``audioBitsPerSecond``, ...) makes
    of ``getUserMedia(constraints)`` in ``page`` over ``seconds``: the recording's bytes."""
    import base64

    return base64.b64decode(await page.evaluate(_RECORD, [constraints, options,
                                                          seconds * 1000]))


async def disable_focus_emulation(page: Any) -> Any:
    """Turn off Playwright's focus emulation so ``blur``/``focus`` really fire; returns the
    page's CDP session (keep it alive while you need the setting)."""
    session = await page.context.new_cdp_session(page)
    await session.send("Emulation.setFocusEmulationEnabled", {"enabled": False})
    return session


# --------------------------------------------------------------------------- plain CDP


class CdpError(RuntimeError):
    """A CDP command failed, or Chromium did not start."""


class CdpBrowser:
    """Chromium started by us, driven over the browser-level DevTools WebSocket."""

    def __init__(self, proc: asyncio.subprocess.Process, ws: Any, profile: Path) -> None:
        self.proc = proc
        self.ws = ws
        self.profile = profile
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(
        cls,
        profile_dir: Path,
        *,
        fake_media: bool = False,
        extra_args: Iterable[str] = (),
        start_timeout: float = 30.0,
    ) -> AsyncIterator[CdpBrowser]:
        profile = Path(profile_dir)
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        args = [CHROMIUM, "--headless", f"--user-data-dir={profile}", "--remote-debugging-port=0",
                *chromium_args(fake_media=fake_media, extra=extra_args), "about:blank"]
        proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        browser: CdpBrowser | None = None
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + start_timeout
            while True:
                text = port_file.read_text() if port_file.exists() else ""
                lines = text.split("\n")
                if len(lines) >= 2 and lines[0].strip().isdigit() and lines[1].strip():
                    break
                if proc.returncode is not None or loop.time() > deadline:
                    raise CdpError("Chromium did not start (no DevToolsActivePort)")
                await asyncio.sleep(0.05)  # polling a file Chromium writes; no event to await
            url = f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
            ws = await websockets.connect(url, max_size=None, ping_interval=None)
            browser = cls(proc, ws, profile)
            yield browser
        finally:
            if browser is not None:
                await browser.close()
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self._pending.pop(msg["id"], None)
                    if fut is not None and not fut.done():
                        if "error" in msg:
                            fut.set_exception(CdpError(str(msg["error"])))
                        else:
                            fut.set_result(msg.get("result", {}))
                else:
                    for listener in list(self._listeners):
                        listener(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(CdpError("CDP connection closed"))

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   session_id: str | None = None, timeout: float = 30.0) -> Any:
        """Send one CDP command (to the browser, or to ``session_id``) and await its result."""
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        await self.ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, timeout)

    def on_event(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        """Call ``listener(message)`` for every CDP event; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def new_page(self, url: str) -> CdpPage:
        """Open ``url`` in a new foreground tab (which hides the previously visible one)."""
        target = await self.send("Target.createTarget", {"url": url})
        target_id = target["targetId"]
        attached = await self.send("Target.attachToTarget", {"targetId": target_id,
                                                             "flatten": True})
        page = CdpPage(self, target_id, attached["sessionId"])
        await page.send("Runtime.enable")
        return page

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send("Browser.close", timeout=5), 5)
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.proc.wait(), 10)


class CdpPage:
    """One tab attached with a flat CDP session."""

    def __init__(self, browser: CdpBrowser, target_id: str, session_id: str) -> None:
        self.browser = browser
        self.target_id = target_id
        self.session_id = session_id

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, session_id=self.session_id)

    async def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate ``expression`` in the page (promises awaited); return its JSON value."""
        result = await self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session_id=self.session_id, timeout=timeout,
        )
        if "exceptionDetails" in result:
            raise CdpError(f"page threw: {result['exceptionDetails'].get('text')} "
                           f"{result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, condition: str, timeout: float = 20.0) -> Any:
        """Await (inside the page, on its own event loop) until ``condition`` is truthy;
        returns its value. Raises :class:`CdpError` on timeout."""
        expression = f"""new Promise((resolve, reject) => {{
            const end = Date.now() + {int(timeout * 1000)};
            const check = () => {{
              let v; try {{ v = ({condition}); }} catch (e) {{ v = undefined; }}
              if (v) resolve(v);
              else if (Date.now() > end) reject(new Error("timeout: " + {json.dumps(condition)}));
              else setTimeout(check, 25);
            }};
            check();
        }})"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self.evaluate(expression, timeout=timeout + 5)
            except CdpError as exc:
                # The tab navigated (e.g. still leaving about:blank): evaluate again.
                if "context" not in str(exc).lower() or loop.time() > deadline:
                    raise

    async def activate(self) -> None:
        """Bring this tab to the front (the other tab becomes hidden)."""
        await self.browser.send("Target.activateTarget", {"targetId": self.target_id})

    async def close(self) -> None:
        await self.browser.send("Target.closeTarget", {"targetId": self.target_id})


# --------------------------------------------------------------------------- websockets


async def recv_until(
    ws: Any,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Read JSON messages from a ``websockets`` client until ``predicate(msg)``; return that
    message. Every message read is appended to ``seen`` when given. Raises
    ``TimeoutError`` with what was seen."""
    got: list[dict[str, Any]] = [] if seen is None else seen
    try:
        async with asyncio.timeout(timeout):
            while True:
                raw = await ws.recv()
                msg: dict[str, Any] = json.loads(raw)
                got.append(msg)
                if predicate(msg):
                    return msg
    except TimeoutError:
        kinds = [m.get("type") for m in got[-20:]]
        raise TimeoutError(f"no matching message in {timeout}s; last seen types: {kinds}") from None


# --------------------------------------------------------------------------- a live sidecar


class LiveSidecar:
    """A real :class:`monitor.server.Sidecar` serving on 127.0.0.1 (see :func:`live_sidecar`)."""

    def __init__(self, sidecar: Any, port: int, secret: str, db: Path) -> None:
        self.sidecar = sidecar
        self.port = port
        self.secret = secret
        self.db = db

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def sdk_url(self) -> str:
        return f"{self.origin}/sdk/sessionguard.js"

    def token(self, session: str, participant: str, role: str = "patient",
              consent: dict[str, Any] | None = None, ttl_s: int = 3600) -> str:
        from monitor.tokens import mint

        return mint(self.secret, session, participant, role, ttl_s, consent)

    def clinician(self, session: str, participant: str = "dr") -> Any:
        """``async with sc.clinician(session) as ws:`` a clinician's websockets client."""
        token = self.token(session, participant, "clinician")
        return websockets.connect(f"{self.ws_url}?token={token}")


SECRET = "test-secret-for-browser-tests-0123456789"
#: a patient token's consent to everything (recording prohibited)
FULL = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}

#: a page script (``sdk_page(before=...)``) that keeps every WebSocket frame the page sends,
#: as text, in ``window.sentFrames``
RECORD_SENT_FRAMES = """
window.sentFrames = [];
const origSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (data) { window.sentFrames.push(String(data));
  return origSend.call(this, data); };
"""


@contextlib.asynccontextmanager
async def live_sidecar(
    db: Path,
    *,
    port: int = 0,
    secret: str = SECRET,
    media: bool = False,
    media_config: dict[str, Any] | None = None,
    **sidecar_options: Any,
) -> AsyncIterator[LiveSidecar]:
    """Run a real sidecar (default config and rules, SQLite store at ``db``) on
    127.0.0.1:``port`` (0: any free port). ``media=True`` enables the WebRTC receiver with
    127.0.0.1 as its ICE host (works on a loopback-only machine). Stopping and entering
    again with the same ``port`` and ``db`` simulates a restart. ``media_config``: more
    ``media:`` settings (``max_calls``...)."""
    from monitor.config import Config, MediaConfig, StoreConfig
    from monitor.server import Sidecar, running

    config = Config(store=StoreConfig(db=db),
                    media=MediaConfig(enabled=media, ice_hosts=("127.0.0.1",),
                                      **(media_config or {})))
    sidecar = Sidecar(config, secret=secret, **sidecar_options)
    async with running(sidecar, "127.0.0.1", port) as bound:
        yield LiveSidecar(sidecar, bound, secret, db)


def stored_signals(db: Path, session: str) -> list[dict[str, Any]]:
    """The ``signal`` entries of ``session`` in the audit store at ``db`` (bodies, in order)."""
    from monitor.store import SqliteStore

    store = SqliteStore(db)
    try:
        return [e["body"] for e in store.entries(session) if e["kind"] == "signal"]
    finally:
        store.close()


async def wait_stored(
    db: Path,
    session: str,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Await until ``predicate(stored_signals(db, session))`` holds; return those signals.
    (Re-reads the store every 50 ms: the store has no change notification.)"""
    bodies: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(timeout):
            while True:
                bodies = await asyncio.to_thread(stored_signals, db, session)
                if predicate(bodies):
                    return bodies
                await asyncio.sleep(0.05)
    except TimeoutError:
        names = [b.get("signal") for b in bodies]
        raise TimeoutError(f"store condition not met in {timeout}s; stored: {names}") from None
