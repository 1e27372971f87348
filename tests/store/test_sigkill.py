"""A process killed with SIGKILL in the middle of writing loses no committed alert."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from monitor.store import SqliteStore

_CHILD = textwrap.dedent("""
    import asyncio, sys
    from monitor.store_async import AsyncStore

    async def main(path):
        store = AsyncStore(path)
        n = 0
        while True:  # until killed
            batch = [store.append_alert("s1", {"type": "alert", "id": f"a{n + i}",
                                                 "rule": "r", "at": 1000 + n + i},
                                        ["http://127.0.0.1:9/hook"])
                     for i in range(10)]
            batch.append(store.append("s1", "signal", 1000 + n, {"n": n}))
            for seq in (await asyncio.gather(*batch))[:-1]:
                print(seq, flush=True)  # only once committed
            n += 10

    asyncio.run(main(sys.argv[1]))
""")


def test_sigkill_loses_no_committed_alert(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db)], stdout=subprocess.PIPE,
                             text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    assert child.stdout is not None
    acknowledged: list[int] = []
    for line in child.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= 200:
            break
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    with SqliteStore(db) as store:
        stored = [a["seq"] for a in store.alerts_after("s1", 0)]
        assert set(acknowledged) <= set(stored)
        assert stored == list(range(1, len(stored) + 1))  # no gap, no duplicate
        assert store.verify("s1").ok
        assert store.pending() == len(stored)  # every stored alert is queued for its webhook
        assert store.append_alert("s1", {"type": "alert", "at": 1}) == len(stored) + 1
