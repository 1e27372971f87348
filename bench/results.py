"""Write one benchmark's section of ``bench/RESULTS.md`` without touching the others."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
from pathlib import Path

__all__ = ["RESULTS", "machine_line", "write_section"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
_HEADER = "# Benchmark results\n\nWritten by `make bench`; each section by its own benchmark.\n"


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    today = _dt.date.today().isoformat()
    return (
        f"Measured {today} on {cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}."
    )


def write_section(key: str, title: str, body: str) -> None:
    """Replace the section marked ``key`` (or append it) with ``title`` and ``body``."""
    text = RESULTS.read_text() if RESULTS.exists() else _HEADER
    begin, end = f"<!-- bench:{key} -->", f"<!-- /bench:{key} -->"
    block = f"{begin}\n## {title}\n\n{machine_line()}\n\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = (
        pattern.sub(lambda _m: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    RESULTS.write_text(text)
