"""Fixtures of the shared real-browser harness (see ``tests/browser/harness.py``).

* ``site`` (session): a :class:`StaticSite` on 127.0.0.1, another origin than any sidecar.
* ``media_files`` (session): ``{"y4m": Path, "wav": Path}`` written once (1 s each).
* ``chromium`` (function): ``ctx = await chromium(fake_media=True, ...)`` → a Playwright
  BrowserContext on /usr/bin/chromium, headless, fresh profile; closed after the test.
* ``cdp_chromium`` (function): ``browser = await cdp_chromium()`` → a :class:`CdpBrowser`
  (plain CDP, for visibility); closed after the test.
* ``sidecar`` (function): a :class:`LiveSidecar` (real server, default rules, SQLite in tmp).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.browser.harness import (
    CdpBrowser,
    LiveSidecar,
    StaticSite,
    live_sidecar,
    playwright_context,
    write_wav,
    write_y4m,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="session")
def site() -> Iterator[StaticSite]:
    with StaticSite() as s:
        yield s


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {"y4m": write_y4m(root / "camera.y4m", 1.0), "wav": write_wav(root / "mic.wav", 1.0)}


@pytest_asyncio.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    async with contextlib.AsyncExitStack() as stack:
        counter = itertools.count()

        async def launch(**options: Any) -> Any:
            profile = tmp_path / f"profile-{next(counter)}"
            return await stack.enter_async_context(playwright_context(profile, **options))

        yield launch


@pytest_asyncio.fixture
async def cdp_chromium(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[CdpBrowser]]]:
    async with contextlib.AsyncExitStack() as stack:
        counter = itertools.count()

        async def launch(**options: Any) -> CdpBrowser:
            profile = tmp_path / f"cdp-{next(counter)}"
            return await stack.enter_async_context(CdpBrowser.launch(profile, **options))

        yield launch


@pytest_asyncio.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[LiveSidecar]:
    async with live_sidecar(tmp_path / "audit.db") as sc:
        yield sc
