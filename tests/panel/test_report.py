"""The integrity report and the tuning view, built from a real SqliteStore."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from monitor.cli import main
from monitor.report import build_report, describe_evidence, render_html, render_json, tuning
from monitor.store import SqliteStore
from signals.errors import StorageError
from tests.panel.sample import T0, populate


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(tmp_path / "audit.db", synchronous="NORMAL") as db:
        populate(db)
        yield db


def test_report_collects_every_kind_of_entry(store: SqliteStore) -> None:
    report = build_report(store, "s-report")
    assert report["verification"]["ok"] is True
    assert report["verification"]["entries"] == len(store.entries("s-report"))
    by_id = {a["id"]: a for a in report["alerts"]}
    assert by_id["a-tab"]["acknowledged_at"] == T0 + 70_000
    assert by_id["a-tab"]["verdict"] == "false_positive"
    assert by_id["a-cap"]["verdict"] == "confirmed"
    assert by_id["a-cap"]["acknowledged_at"] is None
    assert by_id["a-cap"]["evidence"][0]["description"].startswith("A screen or tab capture")
    assert report["blind_periods"] == [{"start": T0 + 180_000, "end": T0 + 240_000,
                                        "reasons": ["patient p1 disconnected"]}]
    assert [c["recording"] for c in report["consent"]] == ["prohibited", "patient_allowed"]
    assert report["recording_requests"][0]["decision"] == "approved"
    counts = report["counts"]
    assert counts["alerts_by_severity"] == {"info": 0, "notice": 1, "warning": 0, "critical": 1}
    assert (counts["acknowledged"], counts["confirmed"], counts["false_positive"]) == (1, 1, 1)
    assert counts["skipped_without_consent"] == 1
    assert report["skipped"] == [{"at": T0 + 270_000, "rule": "no-face",
                                  "signal": "video.no_person", "missing": ["video"]}]
    assert counts["blind_ms"] == 60_000


def test_summary_is_plain_text_a_clinician_can_paste(store: SqliteStore) -> None:
    summary = build_report(store, "s-report")["summary"]
    assert "<" not in summary and "\n" not in summary
    assert "2 alerts (1 critical, 1 notice)" in summary
    assert "1 marked false alarm" in summary
    assert "blind for 1 min in 1 period" in summary
    assert "Audit trail: verified" in summary
    assert "later patient allowed" in summary


def test_html_is_self_contained_with_an_svg_timeline(store: SqliteStore) -> None:
    page = render_html(build_report(store, "s-report"))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|/)""", page)
    assert "@import" not in page and "url(http" not in page
    svg = re.search(r'<svg id="timeline".*?</svg>', page, re.S)
    assert svg is not None
    tree = ElementTree.fromstring(svg.group(0))  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    classes = [e.get("class") for e in tree.iter() if e.get("class")]
    assert classes.count("alert") == 2
    assert classes.count("consent") == 2
    assert classes.count("signal") == 2  # the heartbeat is left out of the picture
    assert classes.count("blind") == 1
    assert classes.count("feedback") == 2 and classes.count("ack") == 1
    assert any("disconnected" in (t.text or "") for t in tree.iter(f"{ns}title"))
    assert 'id="summary"' in page and "Audit trail verified" in page
    assert "<td>no-face</td><td>video.no_person</td><td>video</td>" in page


def test_html_escapes_everything_from_the_store(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "x.db", synchronous="NORMAL") as db:
        evil = "<script>alert(1)</script>"
        db.append_alert("s<x>", {"id": evil, "rule": evil, "severity": "warning",
                                 "title": evil, "message": evil, "evidence": [],
                                 "at": T0})
        page = render_html(build_report(db, "s<x>"))
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


def test_json_form_carries_the_same_data(store: SqliteStore) -> None:
    report = build_report(store, "s-report")
    assert json.loads(render_json(report)) == json.loads(json.dumps(report))


def test_tampered_store_is_reported_not_verified(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with SqliteStore(path, synchronous="NORMAL") as db:
        populate(db)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE entries SET body = replace(body, 'false_positive', 'confirmed') "
                "WHERE kind = 'feedback'")
    raw.commit()
    raw.close()
    with SqliteStore(path) as db:
        report = build_report(db, "s-report")
    assert report["verification"]["ok"] is False
    assert report["verification"]["broken_at"] is not None
    assert "NOT verified" in report["summary"]
    assert "does NOT verify" in render_html(report)


def test_unknown_session_is_a_clear_error(store: SqliteStore) -> None:
    with pytest.raises(StorageError, match="no audit entries"):
        build_report(store, "nope")


def test_tuning_counts_per_rule_over_a_period(store: SqliteStore) -> None:
    populate(store, session="s-two", t0=T0 + 3_600_000)
    rows = {r["rule"]: r for r in tuning(store, T0, T0 + 10 * 3_600_000)}
    tab = rows["tab-hidden"]
    assert (tab["alerts"], tab["sessions"], tab["acknowledged"], tab["false_positive"],
            tab["confirmed"], tab["false_positive_rate"]) == (2, 2, 2, 2, 0, 1.0)
    assert rows["display-capture"]["confirmed"] == 2
    assert rows["display-capture"]["false_positive_rate"] == 0.0
    assert next(r["rule"] for r in tuning(store, T0, T0 + 10 * 3_600_000)) == "tab-hidden"
    only_first = tuning(store, T0, T0 + 3_600_000)
    assert sum(r["alerts"] for r in only_first) == 2


def test_evidence_in_plain_words() -> None:
    assert describe_evidence("client.visibility", {"state": "hidden"}) == (
        "The patient switched away from the call tab")
    assert describe_evidence("client.key", {"combo": "PrintScreen"}) == (
        "The screenshot keys PrintScreen were pressed")
    assert "BlackHole" in describe_evidence("client.virtual_device",
                                            {"kind": "audioinput", "label": "BlackHole 2ch",
                                             "match": "blackhole"})
    assert describe_evidence("something.new", {}) == "something.new"


def test_face_evidence_is_worded_as_what_the_detector_found() -> None:
    # a detector limit, never something the patient did
    assert describe_evidence("video.no_person", {}) == (
        "The face detector found no face in the picture")
    assert describe_evidence("video.extra_person", {}) == (
        "The face detector found two or more faces")


def test_cli_report_html_json_and_rules(store: SqliteStore, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    db = str(store.path)
    out = tmp_path / "r.html"
    assert main(["report", "s-report", "--db", db, "--out", str(out)]) == 0
    assert '<svg id="timeline"' in out.read_text()
    assert main(["report", "s-report", "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["session"] == "s-report"
    assert main(["report", "--rules", "--days", "100000", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "tab-hidden" in text and "100 %" in text
    assert main(["report", "--rules", "--days", "100000", "--db", db, "--format", "json"]) == 0
    assert {r["rule"] for r in json.loads(capsys.readouterr().out)} == {
        "tab-hidden", "display-capture"}


def test_cli_errors_are_one_sentence(store: SqliteStore, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "missing", "--db", str(store.path)]) == 1
    assert "no audit entries" in capsys.readouterr().err
    assert main(["report", "x", "--db", str(tmp_path / "none.db")]) == 1
    assert "no audit store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--db", str(store.path)])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(("argv", "needle"), [
    (["--rules", "--format", "html"], "--format html is for a session's report"),
    (["s-report", "--format", "text"], "--format text is for --rules"),
    (["s-report", "--days", "3"], "--days is for --rules"),
])
def test_cli_an_option_the_report_does_not_use_is_a_usage_error(
        store: SqliteStore, argv: list[str], needle: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", *argv, "--db", str(store.path)])
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("days", ["nan", "inf", "-inf", "0", "-1", "1e300", "many"])
def test_cli_rules_days_must_be_a_sensible_number(store: SqliteStore, days: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--rules", "--days", days, "--db", str(store.path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --days:" in err and "Traceback" not in err


def test_abandoned_webhook_deliveries_are_counted_apart(store: SqliteStore) -> None:
    before = build_report(store, "s-report")["counts"]
    item = store.enqueue("s-report", "http://hooks.example/in", {"seq": 1}, T0 + 1_000)
    store.abandon(item, T0 + 2_000, "HTTP 503", 503)
    counts = build_report(store, "s-report")["counts"]
    assert counts["deliveries"] == before["deliveries"]
    assert counts["deliveries_abandoned"] == before["deliveries_abandoned"] + 1


def test_limited_periods_are_reported_apart_from_blind_ones(tmp_path: Path) -> None:
    # narrowband audio (the band check): monitoring stayed on, but shutters could not be heard
    narrow = ("audio from patient p1 carries nothing above about 6.5 kHz (a headset in its "
              "telephone mode, or a weak connection): shutter sounds cannot be heard")
    with SqliteStore(tmp_path / "audit.db", synchronous="NORMAL") as db:
        db.append("s-lim", "status", T0, {"blind": False, "reasons": [], "limited": []})
        db.append("s-lim", "status", T0 + 30_000, {
            "blind": False, "reasons": [], "limited": [narrow], "cause": "audio_narrowband"})
        db.append("s-lim", "status", T0 + 150_000, {"blind": False, "reasons": [],
                                                    "limited": [], "cause": "audio_unlimited"})
        db.append("s-lim", "status", T0 + 200_000, {"blind": False, "reasons": [],
                                                    "limited": [narrow]})
        db.append("s-lim", "status", T0 + 260_000, {"blind": True, "reasons": ["gone"],
                                                    "limited": []})
        report = build_report(db, "s-lim")
        html = render_html(report)
    assert report["blind_periods"] == [{"start": T0 + 260_000, "end": T0 + 260_000,
                                        "reasons": ["gone"], "open": True}]
    assert report["limited_periods"] == [
        {"start": T0 + 30_000, "end": T0 + 150_000, "reasons": [narrow]},
        {"start": T0 + 200_000, "end": T0 + 260_000, "reasons": [narrow]}]
    assert report["counts"]["limited_ms"] == 180_000
    assert "limited for 3 min in 2 periods" in report["summary"]
    assert "<h2>Limited periods</h2>" in html and "shutter sounds cannot be heard" in html
    # a session without limits says so
    with SqliteStore(tmp_path / "other.db", synchronous="NORMAL") as db:
        populate(db)
        assert build_report(db, "s-report")["limited_periods"] == []
        assert "Monitoring was never reported limited." in render_html(build_report(db, "s-report"))


def test_the_alert_limit_is_reported_apart_from_consent_skips(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "audit.db", synchronous="NORMAL") as db:
        db.append("s-cap", "status", T0, {"blind": False, "reasons": [], "limited": []})
        db.append("s-cap", "skip", T0 + 90_000, {
            "rule": "screenshot-key", "session": "s-cap", "participant": "p1",
            "signal": "client.key", "at": T0 + 90_000, "missing": [],
            "reason": "alert_limit", "limit": 200})
        report = build_report(db, "s-cap")
        html = render_html(report)
    assert report["alert_limit"] == {"at": T0 + 90_000, "limit": 200, "rule": "screenshot-key"}
    assert report["skipped"] == [] and report["counts"]["skipped_without_consent"] == 0
    assert "At +01:30 the session reached the limit of 200 alerts" in html


def test_the_footer_counts_rules_not_run_not_signals(store: SqliteStore, tmp_path: Path) -> None:
    html = render_html(build_report(store, "s-report"))
    assert "1 rule was not run because the patient had not consented to what it needs: " \
        "no-face (needs video)." in html
    assert "set aside" not in html
    with SqliteStore(tmp_path / "two.db", synchronous="NORMAL") as db:
        for i, (rule, missing) in enumerate([("no-face", ["video"]), ("shutter", ["audio"]),
                                             ("no-face", ["video"])]):
            db.append("s-two", "skip", T0 + i, {"rule": rule, "signal": "x", "at": T0 + i,
                                                 "missing": missing})
        html = render_html(build_report(db, "s-two"))
    assert "2 rules were not run because the patient had not consented to what they need: " \
        "no-face (needs video); shutter (needs audio)." in html


def test_a_session_where_only_a_clinician_acted_has_a_report(tmp_path: Path) -> None:
    # what the sidecar writes when a clinician, with no patient ever connected, changes the
    # policy (connecting alone writes nothing: such a session stays "unknown")
    with SqliteStore(tmp_path / "audit.db", synchronous="NORMAL") as db:
        db.append("s-clin", "consent", T0, {"monitoring": [], "recording": "patient_allowed",
                                            "by": "clinician:dr", "at": T0})
        db.append("s-clin", "status", T0, {
            "at": T0, "blind": True, "cause": "consent_changed", "limited": [],
            "participants": [], "session": "s-clin",
            "reasons": ["no patient is connected",
                        "the patient has not consented to any monitoring"]})
        report = build_report(db, "s-clin")
        html = render_html(report)
    assert report["verification"]["ok"] is True and report["alerts"] == []
    assert report["blind_periods"][0]["open"] is True
    assert "No alerts were raised." in report["summary"]
    assert "no patient is connected" in html


def test_signals_the_patients_app_could_not_deliver_are_a_gap_in_the_report(
        tmp_path: Path) -> None:
    # heartbeats carry {"dropped": N} when the app's offline queue overflowed
    with SqliteStore(tmp_path / "audit.db", synchronous="NORMAL") as db:
        for i, data in enumerate(({}, {"dropped": 12}, {}, {"dropped": 3})):
            db.append("s-gap", "signal", T0 + i * 5_000, {
                "signal": "client.heartbeat", "at": T0 + i * 5_000, "data": data,
                "participant": "p1", "source": "client"})
        db.append("s-gap", "signal", T0 + 30_000, {
            "signal": "client.heartbeat", "at": T0 + 30_000, "data": {"dropped": 1},
            "participant": "p2", "source": "client"})
        report = build_report(db, "s-gap")
        html = render_html(report)
    assert report["signals_lost"] == {"p1": 15, "p2": 1}
    assert report["counts"]["signals_lost"] == 16
    sentence = ("could not deliver 16 signals while it was offline (patient p1: 15 signals, "
                "patient p2: 1 signal): the record has a gap there.")
    assert sentence in report["summary"] and sentence in html
    # a session without drops says nothing about them
    with SqliteStore(tmp_path / "other.db", synchronous="NORMAL") as db:
        populate(db)
        plain = build_report(db, "s-report")
    assert plain["signals_lost"] == {} and "could not deliver" not in plain["summary"]
