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


#: every reader of the project's YAML files (rule files: ``_rules_reader`` below)
READERS: list[Callable[[Path], object]] = [
    lambda path: load_media_params(path),
    lambda path: load_config(path, env={}),
    lambda path: DeviceClassifier.from_yaml(path.read_text(), str(path)),
]


@pytest.mark.parametrize("read", READERS)
def test_every_reader_says_where_in_one_line(tmp_path: Path,
                                             read: Callable[[Path], object]) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as caught:
        read(path)
    message = str(caught.value)
    assert "not valid YAML (line 3, column 1: " in message and "\n" not in message


@pytest.mark.parametrize("read", READERS)
def test_every_reader_refuses_nesting_too_deep_to_read(
        tmp_path: Path, read: Callable[[Path], object]) -> None:
    """PyYAML composes nested nodes recursively: 20,000 brackets ran out of stack with a
    RecursionError traceback."""
    path = tmp_path / "deep.yaml"
    path.write_text("video: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply to read"):
        read(path)


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
    said = (captured.err + captured.out).strip()  # rules check adds a tally
    [line] = [x for x in said.splitlines() if "YAML" in x]
    assert "line 3, column 1" in line
    assert len(said.splitlines()) <= 2 and "Traceback" not in said


DUPLICATE = "video:\n  frozen: {}\nvideo:\n  loop: {}\n"   # the second "video:" would win


def _rules_reader(path: Path) -> object:
    from rules import load_rules

    return load_rules([path])


@pytest.mark.parametrize("read", [*READERS, _rules_reader])
def test_every_reader_refuses_a_duplicate_key(tmp_path: Path,
                                              read: Callable[[Path], object]) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATE)
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert "line 3, column 1: duplicate key 'video' (first given at line 1)" in str(caught.value)


def test_a_duplicate_key_inside_a_rule_is_refused(tmp_path: Path) -> None:
    from rules import check_rules

    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - id: a\n    severity: info\n    severity: critical\n")
    [diagnostic] = check_rules([path])
    assert diagnostic.level == "error" and str(path) in str(diagnostic)
    assert "line 4, column 5: duplicate key 'severity'" in diagnostic.message


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    from signals.yaml_errors import load_yaml

    doc = load_yaml("base: &b {x: 1, y: 2}\nthis: {<<: *b, x: 3}\n")
    assert doc["this"] == {"x": 3, "y": 2}


LATIN1 = "# caf\u00e9\nvideo: {}\n".encode("latin-1")


@pytest.mark.parametrize("read", [*READERS[:2], _rules_reader])  # the device list gets text
def test_every_reader_says_a_file_is_not_utf8(tmp_path: Path,
                                              read: Callable[[Path], object]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(LATIN1)
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert "is not UTF-8 text (byte 0xe9 at offset 5)" in str(caught.value)


@pytest.mark.parametrize("argv", [["analyze", "FILE", "--params", "BAD"],
                                  ["serve", "--config", "BAD"],
                                  ["rules", "test", "BAD"],
                                  ["rules", "check", "BAD"],
                                  ["rules", "test", "FIXTURES", "--rules", "BAD"]])
def test_the_commands_say_not_utf8_in_one_line(tmp_path: Path, argv: list[str],
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONGUARD_SECRET", "s" * 32)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(LATIN1)
    media = tmp_path / "clip.webm"
    media.write_bytes(b"")
    fixtures = Path(__file__).parent / "fixtures" / "rules"
    names = {"BAD": str(bad), "FILE": str(media), "FIXTURES": str(fixtures)}
    assert main([names.get(a, a) for a in argv]) == 1
    captured = capsys.readouterr()
    said = captured.err + captured.out
    assert "Traceback" not in said
    [line] = [x for x in said.splitlines() if "UTF-8" in x]
    assert str(bad) in line and "is not UTF-8 text" in line
