"""The capture-API wrappers behave exactly like the originals (real Chromium, no sidecar).

The page saves the originals in a classic script, then imports the SDK (which wraps them at
import time), and compares the wrapped APIs against the saved originals call by call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import StaticSite

pytestmark = pytest.mark.browser

SDK = Path(__file__).resolve().parents[2] / "monitor" / "static" / "sessionguard.js"

PAGE = """<!doctype html><html><head><meta charset="utf-8">
<script>
window.orig = {
  MR: window.MediaRecorder,
  gdm: MediaDevices.prototype.getDisplayMedia,
  canvas: HTMLCanvasElement.prototype.captureStream,
  media: HTMLMediaElement.prototype.captureStream,
};
</script>
<script type="module">
import * as sdk from "./sessionguard.js";
window.sdk = sdk;
window.loaded = true;
</script></head><body><canvas id="c" width="64" height="48"></canvas></body></html>"""

# Each check returns a JSON-able value; the test compares them.
CHECKS = """async () => {
  const out = {};
  const outcome = (fn) => {
    try { const v = fn(); return {ok: true, type: Object.prototype.toString.call(v)}; }
    catch (e) { return {ok: false, name: e.name, message: e.message}; }
  };
  const MR = window.MediaRecorder, O = window.orig.MR;
  out.wrapped = MR !== O && MediaDevices.prototype.getDisplayMedia !== window.orig.gdm
    && HTMLCanvasElement.prototype.captureStream !== window.orig.canvas
    && HTMLMediaElement.prototype.captureStream !== window.orig.media;
  out.name = [MR.name, MR.length, O.length];
  out.proto = MR.prototype === O.prototype;
  out.isTypeSupported = MR.isTypeSupported("video/webm") === O.isTypeSupported("video/webm")
    && typeof MR.isTypeSupported === "function";
  const canvas = document.getElementById("c");
  canvas.getContext("2d").fillRect(0, 0, 10, 10);
  const stream = canvas.captureStream(5);
  out.captureStreamType = Object.prototype.toString.call(stream);
  const rec = new MR(stream);
  out.instanceof = [rec instanceof MR, rec instanceof O, rec.constructor === O];
  out.state = rec.state;
  class Sub extends MR {}
  const sub = new Sub(stream);
  out.subclass = [sub instanceof Sub, sub instanceof O,
                  Object.getPrototypeOf(sub) === Sub.prototype];
  out.noNew = [outcome(() => MR(stream)), outcome(() => O(stream))];
  out.badArg = [outcome(() => new MR("nope")), outcome(() => new O("nope"))];
  out.badThisCanvas = [outcome(() => HTMLCanvasElement.prototype.captureStream.call({})),
                       outcome(() => window.orig.canvas.call({}))];
  out.badThisMedia = [outcome(() => HTMLMediaElement.prototype.captureStream.call(canvas)),
                      outcome(() => window.orig.media.call(canvas))];
  const settle = (p) => Promise.race([
    p.then((s) => ({ok: true, type: Object.prototype.toString.call(s),
                    tracks: s.getTracks().map((t) => t.kind)}),
           (e) => ({ok: false, name: e.name})),
    new Promise((r) => setTimeout(() => r({ok: "timeout"}), 10000))]);
  out.gdm = await settle(navigator.mediaDevices.getDisplayMedia({video: true}));
  out.gdmBadThis = [await settle(MediaDevices.prototype.getDisplayMedia.call({})).catch(
      (e) => ({thrown: e.name})),
    await settle(window.orig.gdm.call({})).catch((e) => ({thrown: e.name}))];
  out.notice = window.sdk.noticeText({monitoring: ["device", "video"], recording: "prohibited"});
  return out;
}"""


async def test_wrappers_behave_like_the_originals(chromium: Any, site: StaticSite) -> None:
    site.add("wrap/sessionguard.js", SDK.read_text())
    url = site.add("wrap/index.html", PAGE)
    ctx = await chromium(fake_media=True)
    page = await ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(url)
    await page.wait_for_function("window.loaded === true")
    out = await page.evaluate(CHECKS)
    assert out["wrapped"] is True, out
    assert out["name"][0] == "MediaRecorder" and out["name"][1] == out["name"][2]
    assert out["proto"] is True
    assert out["isTypeSupported"] is True
    assert out["captureStreamType"] == "[object MediaStream]"
    assert out["instanceof"] == [True, True, True]
    assert out["state"] == "inactive"
    assert out["subclass"] == [True, True, True]
    # Same throw as the originals, with the same error name and message.
    for key in ("noNew", "badArg", "badThisCanvas", "badThisMedia"):
        wrapped, original = out[key]
        assert wrapped["ok"] is False, (key, out[key])
        assert wrapped == original, (key, json.dumps(out[key]))
    assert out["gdm"]["ok"] is True and out["gdm"]["tracks"] == ["video"], out["gdm"]
    assert out["gdmBadThis"][0] == out["gdmBadThis"][1]
    assert out["notice"] == ("This session uses sessionguard: device and window activity, video "
                             "are monitored to detect recording. Recording policy: recording is "
                             "not permitted.")
    assert errors == []
