"""A broken YAML file is one clear sentence wherever it is read: where it breaks, and why
(PyYAML's own message spans several lines, with a copy of the line and a caret)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import load_config
from signals.devices import DeviceClassifier
from signals.errors import ConfigError
from signals.media.params import load_media_params
from signals.yaml_errors import describe_yaml_error

BROKEN = "video:\n  frozen: [1,\n"   # the flow sequence never closes


def test_describe_yaml_error_is_one_line_with_the_place() -> None:
    import yaml

    with pytest.raises(yaml.YAMLError) as caught:
        yaml.safe_load(BROKEN)
    text = describe_yaml_error(caught.value)
    assert text.startswith("line 3, column 1: ") and "\n" not in text


@pytest.mark.parametrize("read", [
    lambda path: load_media_params(path),
    lambda path: load_config(path, env={}),
    lambda path: DeviceClassifier.from_yaml(path.read_text(), str(path)),
])
def test_every_reader_says_where_in_one_line(tmp_path: Path,
                                             read: Callable[[Path], object]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as caught:
        read(path)
    message = str(caught.value)
    assert "not valid YAML (line 3, column 1: " in message and "\n" not in message


@pytest.mark.parametrize("argv", [["analyze", "FILE", "--params", "BROKEN"],
                                  ["serve", "--config", "BROKEN"],
                                  ["rules", "test", "BROKEN"],
                                  ["rules", "check", "BROKEN"]])
def test_the_commands_print_one_line(tmp_path: Path, argv: list[str],
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONGUARD_SECRET", "s" * 32)
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN)
    media = tmp_path / "clip.webm"
    media.write_bytes(b"")
    args = [str(broken) if a == "BROKEN" else str(media) if a == "FILE" else a for a in argv]
    assert main(args) == 1
    captured = capsys.readouterr()
    said = (captured.err + captured.out).strip()  # rules check reports on stdout, with a tally
    [line] = [x for x in said.splitlines() if "YAML" in x]
    assert "line 3, column 1" in line
    assert len(said.splitlines()) <= 2 and "Traceback" not in said
