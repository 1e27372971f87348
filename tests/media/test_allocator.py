"""``monitor.allocator.keep_freed_memory``: with it, analysing a file stops faulting freed
memory back in page by page (the reason it exists; see the module). Each case runs in a
fresh interpreter, since the setting is per process. The file is a clip the test writes
(VP8 + Opus, from the video corpus's photographs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.allocator import keep_freed_memory
from tests.media import corpus_video as corpus

_PROBE = """
import json, resource, sys
from monitor.allocator import keep_freed_memory
from monitor.commands.analyze import analyze_file
applied = keep_freed_memory()
analyze_file(sys.argv[1])  # warm: imports, cascades, first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
analyze_file(sys.argv[1])
print(json.dumps({"applied": applied,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("alloc") / "person.webm"
    corpus.write_media_file(path, corpus.clip_person(3, dur=6.0).frames, "webm", "libvpx",
                            "libopus")
    return path


def _faults(clip: Path, keep: str) -> dict[str, int]:
    env = {**os.environ, "SESSIONGUARD_KEEP_FREED_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", _PROBE, str(clip)], env=env, check=True,
                         capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_analysing_a_file_no_longer_faults_memory_back_in(clip: Path) -> None:
    default = _faults(clip, "0")
    kept = _faults(clip, "1")
    assert default["applied"] is False and kept["applied"] is True
    # measured: thousands of faults per run with glibc's defaults, a handful with the limits
    assert default["faults"] > 500
    assert kept["faults"] < default["faults"] / 10


def test_the_environment_turns_it_off() -> None:
    assert keep_freed_memory({"SESSIONGUARD_KEEP_FREED_MEMORY": "0"}) is False
    assert keep_freed_memory({"SESSIONGUARD_KEEP_FREED_MEMORY": "false"}) is False
