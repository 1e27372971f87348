"""Material the benchmarks fetch at bench time from the package registries (nothing is
installed or kept)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["pip_download"]


def pip_download(spec: str, into: Path, *options: str) -> Path:
    """``pip download --no-deps`` one distribution (``spec``, e.g. ``"pkg==1.0"``) into the
    folder ``into``; the archive's path. Raises ``RuntimeError`` with pip's reason."""
    into.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                           *options, "--dest", str(into), spec],
                          capture_output=True, text=True, timeout=600, check=False)
    archive = next((p for p in sorted(into.iterdir()) if p.is_file()), None)
    if done.returncode != 0 or archive is None:
        raise RuntimeError(f"pip download {spec} failed: {done.stderr.strip()[-200:]}")
    return archive
