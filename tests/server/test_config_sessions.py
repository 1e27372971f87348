"""Configuration loading and the pure per-session state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.config import check_media, load_config, require_secret
from monitor.sessions import SeqTracker, Session, merge_claim
from signals.consent import Consent
from signals.errors import ConfigError


def test_defaults_and_env_overrides(tmp_path: Path) -> None:
    cfg = load_config(env={})
    assert (cfg.host, cfg.port, cfg.store.retention_days) == ("127.0.0.1", 8750, 30)
    assert cfg.limits.max_message_bytes == 65536 and cfg.heartbeat_timeout_s == 20
    assert cfg.rules and cfg.rules[0].name == "rules" and cfg.secret is None
    cfg = load_config(env={"SESSIONGUARD_PORT": "9001", "SESSIONGUARD_HOST": "0.0.0.0",
                           "SESSIONGUARD_DB": str(tmp_path / "x.db"),
                           "SESSIONGUARD_HEARTBEAT_TIMEOUT": "2.5",
                           "SESSIONGUARD_WEBHOOK_URLS": "http://a/x, http://b/y",
                           "SESSIONGUARD_SECRET": "abc", "SESSIONGUARD_WEBHOOK_SECRET": "w"})
    assert (cfg.port, cfg.host, cfg.heartbeat_timeout_s) == (9001, "0.0.0.0", 2.5)
    assert cfg.webhooks.urls == ("http://a/x", "http://b/y")
    assert (cfg.secret, cfg.webhook_secret, cfg.store.db) == ("abc", "w", tmp_path / "x.db")
    assert require_secret(cfg) == "abc"
    assert load_config(env={}).media.max_calls is None
    assert load_config(env={"SESSIONGUARD_MEDIA_MAX_CALLS": "6"}).media.max_calls == 6
    assert load_config(env={"SESSIONGUARD_MEDIA_MAX_CALLS": ""}).media.max_calls is None


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    secret = tmp_path / "s.yaml"
    secret.write_text("secret: hunter2\n")
    with pytest.raises(ConfigError, match="must not contain secrets"):
        load_config(secret, env={})
    bad = tmp_path / "b.yaml"
    bad.write_text("port: lots\n")
    with pytest.raises(ConfigError, match="port"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(ConfigError, match="SESSIONGUARD_SECRET"):
        require_secret(load_config(env={}))
    rel = tmp_path / "r.yaml"
    rel.write_text("rules: [myrules]\nlimits: {max_message_bytes: 1024}\n")
    cfg = load_config(rel, env={})
    assert cfg.rules == (tmp_path / "myrules",) and cfg.limits.max_message_bytes == 1024


def test_serve_without_secret_is_one_clear_sentence(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "monitor.cli", "serve", "--port", "0"],
                          capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 1
    assert "SESSIONGUARD_SECRET" in proc.stderr and "Traceback" not in proc.stderr


def test_serve_warns_in_words_about_a_short_secret_and_a_message_limit_too_small_for_offers(
        tmp_path: Path) -> None:
    """Both start the sidecar (the secret may be a test's; the limit a deliberate choice), and
    each is said once at start, in a sentence, not per token or per refused offer."""
    config = _config_file(tmp_path, "port: 0\nlimits: {max_message_bytes: 2048}\n"
                                    "store: {db: audit.db}\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SESSIONGUARD_SECRET": "short"}
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "serve", "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None and "listening" in proc.stdout.readline()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "the token secret is 5 bytes; HS256 needs at least 32" in err
    assert "limits.max_message_bytes is 2048: a WebRTC offer" in err
    assert "InsecureKeyLengthWarning" not in err and "Traceback" not in err


def _config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", ['host: ""\n', "host: ' '\n"])
def test_an_empty_host_is_refused_not_every_interface(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"host: must not be empty .*every interface"):
        load_config(_config_file(tmp_path, text), env={})
    with pytest.raises(ConfigError, match="SESSIONGUARD_HOST: must not be empty"):
        load_config(env={"SESSIONGUARD_HOST": ""})
    with pytest.raises(ConfigError, match="host: must not be empty"):
        load_config(env={}).with_overrides(host="")


@pytest.mark.parametrize("text", [
    "heartbeat_timeout_s: .inf\n", "tick_interval_s: .nan\n", "limits: {rate_per_s: .inf}\n",
    "webhooks: {give_up_after_hours: .inf}\n", "store: {group_commit_ms: .nan}\n",
])
def test_inf_and_nan_are_refused(tmp_path: Path, text: str) -> None:
    key = text.split(":")[0] if "{" not in text else (
        text.split(":")[0] + "." + text.split("{")[1].split(":")[0])
    with pytest.raises(ConfigError, match=rf"c\.yaml: {key}: Input should be a finite number"):
        load_config(_config_file(tmp_path, text), env={})


@pytest.mark.parametrize(("env", "needle"), [
    ({"SESSIONGUARD_PORT": "abc"}, "environment variable SESSIONGUARD_PORT: Input should be"),
    ({"SESSIONGUARD_HEARTBEAT_TIMEOUT": "inf"}, "SESSIONGUARD_HEARTBEAT_TIMEOUT: Input should"),
    ({"SESSIONGUARD_MEDIA_ICE_HOSTS": "10.0.0.1, nope"},
     "SESSIONGUARD_MEDIA_ICE_HOSTS: 'nope' is not an IP address"),
    ({"SESSIONGUARD_DB_SYNCHRONOUS": "sometimes"}, "SESSIONGUARD_DB_SYNCHRONOUS: Input should be"),
    ({"SESSIONGUARD_MEDIA_MAX_CALLS": "0"}, "SESSIONGUARD_MEDIA_MAX_CALLS: Input should be"),
    ({"SESSIONGUARD_RULES": "/nonexistent/r1:/nonexistent/r2"},
     "environment variable SESSIONGUARD_RULES: '/nonexistent/r1' does not exist"),
    ({"SESSIONGUARD_MEDIA_PARAMS": "/nonexistent/media.yaml"},
     "environment variable SESSIONGUARD_MEDIA_PARAMS: '/nonexistent/media.yaml' does not exist"),
])
def test_a_bad_environment_override_names_the_variable(tmp_path: Path, env: dict[str, str],
                                                       needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config_file(tmp_path, "port: 0\n"), env=env)
    assert needle in str(caught.value) and "c.yaml" not in str(caught.value)


@pytest.mark.parametrize("url", ["http://example.com:99999/h?key=SECRET",
                                 "http://user:SECRET@example.com:0/h", "ftp://example.com/h",
                                 "http:///h"])
def test_a_bad_webhook_url_is_refused_at_load_without_its_secrets(tmp_path: Path,
                                                                 url: str) -> None:
    path = _config_file(tmp_path, f"webhooks: {{urls: ['{url}']}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"SESSIONGUARD_WEBHOOK_SECRET": "w"})
    message = str(caught.value)
    assert f"config file {path}: webhooks.urls: webhook URL 'http" in message or "ftp" in message
    assert "SECRET" not in message and "user" not in message


def test_environment_paths_are_relative_to_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = _config_file(folder, "rules: [own-rules]\nmedia: {params: own-media.yaml}\n")
    cfg = load_config(path, env={})
    assert cfg.rules == (folder / "own-rules",) and cfg.media.params == folder / "own-media.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rules").mkdir()
    (tmp_path / "m.yaml").write_text("{}\n")
    cfg = load_config(path, env={"SESSIONGUARD_RULES": "rules", "SESSIONGUARD_DB": "x.db",
                                 "SESSIONGUARD_MEDIA_PARAMS": "m.yaml"})
    assert [p.resolve() for p in cfg.rules] == [tmp_path / "rules"]
    assert cfg.media.params is not None and cfg.media.params.resolve() == tmp_path / "m.yaml"
    assert cfg.store.db.resolve() == tmp_path / "x.db"


def test_previous_secrets_are_stripped() -> None:
    cfg = load_config(env={"SESSIONGUARD_SECRET_PREVIOUS": " A, B ,, "})
    assert cfg.previous_secrets == ("A", "B")


@pytest.mark.parametrize(("text", "needle"), [
    ("media: {params: gone.yaml}\n", "cannot read media parameters {dir}/gone.yaml"),
    ("media: {params: m.yaml}\n", "media parameters {dir}/m.yaml: audio parameters: shutterr"),
])
def test_the_media_section_fails_at_startup_not_at_the_first_offer(
        tmp_path: Path, text: str, needle: str) -> None:
    from monitor.server import Sidecar

    (tmp_path / "m.yaml").write_text("audio: {shutterr: {enabled: false}}\n")
    cfg = load_config(_config_file(tmp_path, text + f"store: {{db: {tmp_path / 'a.db'}}}\n"),
                      env={"SESSIONGUARD_SECRET": "s" * 32})
    with pytest.raises(ConfigError) as caught:
        Sidecar(cfg)
    assert needle.format(dir=tmp_path) in str(caught.value)
    check_media(cfg.with_overrides(media={"enabled": False}))  # not analysed: not read
    with pytest.raises(ConfigError, match="'not an ip' is not an IP address"):
        load_config(_config_file(tmp_path, "media: {ice_hosts: [not an ip]}\n"), env={})


@pytest.mark.parametrize("argv", [["serve", "--port", "70000"], ["serve", "--port=-1"],
                                  ["serve", "--host", ""], ["demo", "--port", "70000"],
                                  ["demo", "--host="], ["serve", "--port", "x"]])
def test_bad_host_or_port_options_are_usage_errors(argv: list[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from monitor.cli import main

    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"sessionguard {argv[0]}: error: argument --" in err and "Traceback" not in err

def test_seq_tracker_dedups_out_of_order_and_bounds_memory() -> None:
    t = SeqTracker(max_runs=8)
    assert [t.first_time(s) for s in (5, 6, 6, 8, 7, 8, 5, 4)] == [
        True, True, False, True, True, False, False, True]
    assert t.runs == [(4, 8)]
    for s in range(100, 140, 2):  # gaps that never fill do not grow without bound
        assert t.first_time(s)
    assert len(t.runs) == 8
    assert not t.first_time(138) and not t.first_time(5)


def test_seq_tracker_keeps_two_tabs_apart() -> None:
    """Two tabs of one patient number their signals from their own start (the SDK's
    Date.now() * 1000): interleaved, with resends and many gaps in one of them, every seq is
    new exactly once and none of one tab's makes the other's look seen."""
    t = SeqTracker()
    a, b = 1_764_000_000_000_000, 1_764_000_060_000_000
    fresh = [t.first_time(a + i) for i in range(5)]
    for i in range(600):  # tab B sends a lot, every other seq lost at first
        fresh.append(t.first_time(b + 2 * i))
        fresh.append(t.first_time(a + 5 + i))
        fresh.append(not t.first_time(a + 4 + i))  # a resend of tab A's previous signal
    assert all(fresh)
    assert len(t.runs) <= t.max_runs and (a, a + 604) in t.runs


def test_status_is_blind_whenever_the_sidecar_cannot_see() -> None:
    s = Session("s1", consent=Consent(frozenset({"device", "video"})))
    st = s.status(1)
    assert st["blind"] and "no patient is connected" in st["reasons"]
    s.patient_connected("p1", 1000)
    assert not s.status(1000)["blind"]
    assert s.check_silence(5000, 3000) == ["p1"] and s.status(5000)["blind"]
    assert s.status(5000)["participants"][0]["sdk"] == "silent"
    assert s.check_silence(6000, 3000) == []
    assert s.seen("p1", 6000) and not s.status(6000)["blind"]
    assert s.set_media("p1", "video", "flowing") and not s.set_media("p1", "video", "flowing")
    assert not s.status(6000)["blind"]
    s.set_media("p1", "video", "stopped")
    assert any("video" in r for r in s.status(6000)["reasons"])
    s.patient_disconnected("p1", 7000)
    st = s.status(7000)
    assert st["blind"] and st["participants"][0]["sdk"] == "disconnected"
    assert s.idle_since == 7000


def test_narrowband_audio_is_a_limit_not_blindness() -> None:
    s = Session("s1", consent=Consent(frozenset({"device", "audio"})))
    s.patient_connected("p1", 1000)
    assert s.status(1000)["limited"] == []
    assert s.status(1000)["participants"][0]["limits"] == {}
    # a limit is recorded at once but shown only while that media flows
    assert s.set_limit("p1", "audio", "narrowband") and not s.set_limit("p1", "audio", "narrowband")
    assert s.status(1000)["limited"] == []
    s.set_media("p1", "audio", "flowing")
    st = s.status(2000)
    assert not st["blind"] and st["reasons"] == []
    assert st["participants"][0]["limits"] == {"audio": "narrowband"}
    assert len(st["limited"]) == 1 and "shutter sounds cannot be heard" in st["limited"][0]
    assert "p1" in st["limited"][0]
    # stopped audio is blindness, not a limit
    s.set_media("p1", "audio", "stopped")
    st = s.status(3000)
    assert st["blind"] and st["limited"] == []
    # cleared
    s.set_media("p1", "audio", "flowing")
    assert s.set_limit("p1", "audio", None) and not s.set_limit("p1", "audio", None)
    assert s.status(4000)["limited"] == [] and s.status(4000)["participants"][0]["limits"] == {}
    # outside the consent nothing is said about it
    t = Session("s2", consent=Consent(frozenset({"device"})))
    t.patient_connected("p1", 1000)
    t.set_media("p1", "audio", "flowing")
    t.set_limit("p1", "audio", "narrowband")
    assert t.status(1000)["limited"] == []


def test_refused_video_says_why_it_stopped() -> None:
    s = Session("s1", consent=Consent(frozenset({"device", "audio", "video"})))
    s.patient_connected("p1", 1000)
    s.set_media("p1", "video", "flowing")
    s.set_media("p1", "audio", "flowing")
    s.set_limit("p1", "audio", "narrowband")
    # the receiver reports the refused video stopped, then why
    s.set_media("p1", "video", "stopped")
    assert "video from patient p1 has stopped" in s.status(2000)["reasons"]
    assert s.set_limit("p1", "video", "oversized")
    st = s.status(3000)
    assert st["blind"] and st["participants"][0]["limits"] == {"audio": "narrowband",
                                                               "video": "oversized"}
    [reason] = st["reasons"]
    assert reason.startswith("video from patient p1 is not analysed")
    assert len(st["limited"]) == 1 and "shutter" in st["limited"][0]  # audio still flows
    # a narrowband limit still held when audio stops is not a reason: audio simply stopped
    s.set_media("p1", "audio", "stopped")
    assert "audio from patient p1 has stopped" in s.status(4000)["reasons"]


def test_video_whose_analysis_keeps_failing_is_blind_and_says_why() -> None:
    s = Session("s1", consent=Consent(frozenset({"device", "video"})))
    s.patient_connected("p1", 1000)
    s.set_media("p1", "video", "flowing")
    s.set_media("p1", "video", "stopped")
    s.set_limit("p1", "video", "failed")
    st = s.status(2000)
    [reason] = st["reasons"]
    assert st["blind"] and reason.startswith("video from patient p1 is not analysed: the "
                                             "sidecar's video analysis keeps failing")


def test_an_overloaded_analysis_is_a_limit_named_for_its_kind() -> None:
    s = Session("s1", consent=Consent(frozenset({"device", "audio", "video"})))
    s.patient_connected("p1", 1000)
    s.set_media("p1", "video", "flowing")
    s.set_media("p1", "audio", "flowing")
    assert s.set_limit("p1", "video", "overloaded")
    st = s.status(2000)
    assert not st["blind"] and st["reasons"] == []
    [limited] = st["limited"]
    assert limited.startswith("video from patient p1 is analysed only in part")
    assert "may come late or be missed" in limited
    s.set_limit("p1", "audio", "overloaded")
    assert s.status(3000)["limited"][0].startswith("audio from patient p1 is analysed")
    s.set_limit("p1", "audio", "lossy")  # a connection losing packets: a limit, not blind
    st = s.status(3000)
    assert not st["blind"] and any("arrives with gaps" in m for m in st["limited"])
    assert s.set_limit("p1", "video", None) and len(s.status(4000)["limited"]) == 1


def test_later_patient_tokens_can_only_narrow_monitoring() -> None:
    first = Consent(frozenset({"device", "audio"}), "patient_allowed")
    assert merge_claim(Consent(), first, True) == first
    narrowed = merge_claim(first, Consent(frozenset({"device", "video"})), False)
    assert narrowed == Consent(frozenset({"device"}), "patient_allowed")
