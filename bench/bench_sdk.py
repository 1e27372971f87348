"""Main-thread cost of the browser SDK in the page, per minute (real headless Chromium).

The same page runs for ``SECONDS`` without the SDK, with the SDK connected (full consent,
idle: heartbeats only) and with the SDK under device churn (a ``devicechange`` every 2 s,
so it re-enumerates and re-hashes every device). CDP ``Performance.getMetrics`` gives the
main thread's ``TaskDuration`` and ``ScriptDuration``; a ``PerformanceObserver`` counts long
tasks (> 50 ms). The difference with the baseline, scaled to one minute, is the SDK's cost.
Connect time is measured in the page (``performance.now()`` around ``connect``).

``python -m bench sdk`` (about a minute and a half).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from bench.results import write_section

__all__ = ["SECONDS", "main", "measure"]

SECONDS = 20.0

_OBSERVE = """
window.longTasks = 0;
try { new PerformanceObserver((l) => { window.longTasks += l.getEntries().length; })
        .observe({type: "longtask", buffered: true}); } catch (e) {}
"""

_CHURN = """
setInterval(() => navigator.mediaDevices.dispatchEvent(new Event("devicechange")), 2000);
"""

_BASELINE = f"""<!doctype html><html><head><meta charset="utf-8"><script>{_OBSERVE}
window.sg = {{ready: true}};</script></head><body><h1>call</h1></body></html>"""


def _page(sdk_url: str, ws_url: str, token: str, churn: bool) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><script>{_OBSERVE}</script>
<script type="module">
const t0 = performance.now();
const {{ connect }} = await import("{sdk_url}");
const guard = await connect({{url: "{ws_url}", token: "{token}", onNotice: () => true}});
window.sg = {{ready: true, guard, connectMs: performance.now() - t0}};
{_CHURN if churn else ""}
</script></head><body><h1>call</h1></body></html>"""


async def _run(ctx: Any, url: str, seconds: float) -> dict[str, float]:
    page = await ctx.new_page()
    await page.goto(url)
    await page.wait_for_function("window.sg && window.sg.ready === true")
    cdp = await ctx.new_cdp_session(page)
    await cdp.send("Performance.enable")

    async def metrics() -> dict[str, float]:
        got = await cdp.send("Performance.getMetrics")
        return {m["name"]: float(m["value"]) for m in got["metrics"]}

    before = await metrics()
    await asyncio.sleep(seconds)   # a benchmark: we measure what happens in this time
    after = await metrics()
    per_min = 60.0 / seconds
    result = {
        "task_ms_per_min": (after["TaskDuration"] - before["TaskDuration"]) * 1000 * per_min,
        "script_ms_per_min": (after["ScriptDuration"] - before["ScriptDuration"]) * 1000
        * per_min,
        "long_tasks": float(await page.evaluate("window.longTasks")),
        "connect_ms": float(await page.evaluate("window.sg.connectMs || 0")),
        "pending": float(await page.evaluate("window.sg.guard ? window.sg.guard.pending : 0")),
    }
    await page.close()
    return result


async def measure(seconds: float = SECONDS) -> dict[str, dict[str, float]]:
    from tests.browser.harness import StaticSite, live_sidecar, playwright_context

    consent = {"monitoring": ["device", "audio", "video"], "recording": "prohibited"}
    with tempfile.TemporaryDirectory() as tmp, StaticSite() as site:
        async with live_sidecar(Path(tmp) / "bench.db") as sc, \
                playwright_context(Path(tmp) / "profile", fake_media=True,
                                   permissions=["camera", "microphone"]) as ctx:
            out: dict[str, dict[str, float]] = {}
            out["baseline (no SDK)"] = await _run(ctx, site.add("base.html", _BASELINE), seconds)
            for name, churn in (("SDK, idle", False), ("SDK, devicechange every 2 s", True)):
                token = sc.token(f"bench-{churn}", "pat", "patient", consent)
                url = site.add(f"sdk-{churn}.html", _page(sc.sdk_url, sc.ws_url, token, churn))
                out[name] = await _run(ctx, url, seconds)
            return out


def main() -> None:
    results = asyncio.run(measure())
    base = results["baseline (no SDK)"]
    rows = ["| page | main-thread task ms/min | script ms/min | SDK cost ms/min "
            "| long tasks | connect ms |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        cost = r["task_ms_per_min"] - base["task_ms_per_min"]
        rows.append(f"| {name} | {r['task_ms_per_min']:.1f} | {r['script_ms_per_min']:.1f} | "
                    f"{'—' if r is base else f'{cost:.1f}'} | {int(r['long_tasks'])} | "
                    f"{r['connect_ms']:.0f} |")
    body = "\n".join(rows) + (
        f"\n\nEach page ran {SECONDS:.0f} s in headless Chromium (CDP Performance.getMetrics, "
        "scaled to one minute; the SDK cost is the difference with the baseline page). "
        "Connect time includes importing the module from the sidecar and the WebSocket "
        "handshake on 127.0.0.1.")
    print(body)
    write_section("sdk", "Browser SDK: main-thread cost in the page", body)


if __name__ == "__main__":
    main()
