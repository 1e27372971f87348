"""Fixtures shared by the live media tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Any]]:
    """Receivers and peers a test appends are closed after it, newest first."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        await thing.close()
