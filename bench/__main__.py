"""``make bench``: runs every ``bench/bench_*.py`` (each has ``main() -> None``) in turn.

Each benchmark prints its figures and rewrites its own section of ``bench/RESULTS.md``
(see :func:`bench.results.write_section`). ``python -m bench engine`` runs only the ones
whose name contains ``engine``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    wanted = [n for n in names if not argv or any(a in n for a in argv)]
    for name in wanted:
        print(f"== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
