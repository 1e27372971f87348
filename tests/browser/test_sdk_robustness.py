"""The browser SDK when things go wrong: privacy across sessions, dead sockets, oversized
resends, long outages, bad tokens — against the real sidecar, in real headless Chromium."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.harness import (
    LiveSidecar,
    StaticSite,
    sdk_page,
    stored_signals,
    wait_stored,
)

pytestmark = pytest.mark.browser

FULL = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
NO_DEVICE = {"monitoring": ["audio", "video"], "recording": "prohibited"}
KEY = ("window.dispatchEvent(new KeyboardEvent('keydown', "
       "{key: 'PrintScreen', code: 'PrintScreen'}))")


def names(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["signal"] for b in bodies]


async def open_call(ctx: Any, site: StaticSite, sc: LiveSidecar, session: str,
                    consent: dict[str, Any] | None, *, name: str, ws_url: str | None = None,
                    before: str = "", options: str = "", token: str | None = None,
                    wait: str = "window.sg.ready === true && window.sg.consents.length > 0",
                    clock: bool = False) -> Any:
    token = token or sc.token(session, "pat", "patient", consent)
    url = site.add(f"{name}.html", sdk_page(sc.sdk_url, ws_url or sc.ws_url, token,
                                            before=before, connect_options=options))
    page = await ctx.new_page()
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    if clock:
        await page.clock.install()
    await page.goto(url)
    await page.wait_for_function(wait)
    return page


# A page with two appointments in a row: the first without the device scope, a recorder
# during it and one after its close(), then the second with the device scope.
TWO_APPOINTMENTS = """<!doctype html><html><head><script type="module">
import { connect } from %(sdk)s;
const rec = () => new MediaRecorder(document.createElement("canvas").captureStream(),
                                    {mimeType: "video/webm"});
const g1 = await connect({ url: %(ws)s, token: %(t1)s, onNotice: () => true });
rec();
g1.close();
rec();
window.g2 = await connect({ url: %(ws)s, token: %(t2)s });
window.ready = true;
</script></head><body>call</body></html>"""


async def test_captures_seen_without_consent_or_after_close_never_reach_a_later_session(
        chromium: Any, site: StaticSite, sidecar: LiveSidecar) -> None:
    ctx = await chromium()
    t1 = sidecar.token("s-appt-1", "pat", "patient", NO_DEVICE)
    t2 = sidecar.token("s-appt-2", "pat", "patient", FULL)
    url = site.add("two-appointments.html", TWO_APPOINTMENTS % {
        "sdk": json.dumps(sidecar.sdk_url), "ws": json.dumps(sidecar.ws_url),
        "t1": json.dumps(t1), "t2": json.dumps(t2)})
    page = await ctx.new_page()
    await page.goto(url)
    await page.wait_for_function("window.ready === true")
    await page.evaluate(KEY)   # a marker sent after anything queued before it
    stored = await wait_stored(sidecar.db, "s-appt-2", lambda b: "client.key" in names(b))
    assert "client.media_recorder" not in names(stored)
    assert "client.capture_stream" not in names(stored)
    assert stored_signals(sidecar.db, "s-appt-1") == []
