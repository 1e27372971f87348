"""Each video detector on positive and negative clips (VP8 round trips of the corpus)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from signals.media.detection import Detection
from signals.media.video import VideoAnalyzer
from tests.media import corpus_video as corpus


def run(clip: corpus.Clip) -> list[Detection]:
    analyzer = VideoAnalyzer()
    found: list[Detection] = []
    for i, frame in enumerate(clip.frames):
        found += analyzer.push(frame, i / clip.fps)
    found += analyzer.finish(clip.duration)
    return found


@functools.cache
def detections(kind: str) -> tuple[Detection, ...]:
    builders = {
        "astronaut": lambda: corpus.clip_person(0),
        "cameraman": lambda: corpus.clip_person(0, "cameraman"),
        "still": lambda: corpus.clip_still_person(0),
        "two": lambda: corpus.clip_two_people(0),
        "empty": lambda: corpus.clip_empty(1),
        "dark": lambda: corpus.clip_covered(0),
        "uniform": lambda: corpus.clip_covered(0, "uniform"),
        "frozen": lambda: corpus.clip_frozen(0),
        "loop": lambda: corpus.clip_loop(0),
        "screen": lambda: corpus.clip_screen(0),
        "virtual": lambda: corpus.clip_virtual_camera(0),
        "dim": lambda: corpus.clip_dim_person(0),
        "dim-empty": lambda: corpus.clip_dim_empty(1),
    }
    return tuple(run(corpus.vp8_round_trip(builders[kind]())))


def closed(kind: str, signal: str) -> list[Detection]:
    return [d for d in detections(kind) if d.signal == signal and d.end is not None]


NEGATIVES = ["astronaut", "cameraman", "still", "dim"]


@pytest.mark.parametrize("kind", NEGATIVES)
def test_a_person_on_camera_fires_nothing(kind: str) -> None:
    assert [d.signal for d in detections(kind)] == []


def test_extra_person() -> None:
    [d] = closed("two", "video.extra_person")
    assert d.t <= 3.0 and d.end == pytest.approx(8.0)
    assert d.evidence["faces"] >= 2 and d.evidence["lighting"] == "ok"
    assert 0.5 <= d.confidence <= 1.0
    for kind in ("astronaut", "cameraman", "loop", "empty"):
        assert closed(kind, "video.extra_person") == []


def test_no_person_is_an_observation_not_an_accusation() -> None:
    [d] = closed("empty", "video.no_person")
    assert d.t == 0.0 and d.end == pytest.approx(8.0)
    assert d.evidence["observation"] == "no face detected in the picture"
    assert d.evidence["faces"] == 0
    for kind in ("astronaut", "cameraman", "two", "still"):
        assert closed(kind, "video.no_person") == []


def test_poor_light_lowers_confidence_and_says_so() -> None:
    [d] = closed("dim-empty", "video.no_person")
    assert d.evidence["lighting"] == "poor"
    assert "darker skin" in d.evidence["note"]
    assert d.confidence < 0.6
    good = closed("empty", "video.no_person")[0]
    assert good.evidence["lighting"] == "ok" and "note" not in good.evidence


@pytest.mark.parametrize("kind, what", [("dark", "dark"), ("uniform", "uniform")])
def test_obscured(kind: str, what: str) -> None:
    [d] = closed(kind, "video.obscured")
    assert d.t == pytest.approx(2.0, abs=0.3) and d.end == pytest.approx(7.0, abs=0.4)
    assert d.evidence["kind"] == what
    # a covered camera explains the missing face: no no_person, no frozen
    assert closed(kind, "video.no_person") == [] and closed(kind, "video.frozen") == []


def test_obscured_negatives() -> None:
    for kind in ("astronaut", "dim", "screen", "frozen"):
        assert closed(kind, "video.obscured") == [], kind


def test_frozen() -> None:
    [d] = closed("frozen", "video.frozen")
    assert d.t == pytest.approx(2.0, abs=0.5) and d.end == pytest.approx(7.0, abs=0.4)
    assert d.evidence["mean_diff"] < 0.25
    # a person sitting very still still has sensor noise: not frozen
    for kind in ("still", "astronaut", "screen"):
        assert closed(kind, "video.frozen") == [], kind


def test_loop() -> None:
    [d] = closed("loop", "video.loop")
    assert d.t == pytest.approx(5.0, abs=0.5) and d.end == pytest.approx(9.0, abs=0.3)
    assert d.evidence["offset_s"] == pytest.approx(5.0, abs=0.3)
    # static and slowly moving scenes match themselves but never count as a replay
    for kind in ("still", "astronaut", "cameraman", "frozen", "empty"):
        assert closed(kind, "video.loop") == [], kind


def test_synthetic_source() -> None:
    [screen] = closed("screen", "video.synthetic_source")
    assert screen.evidence["strength"] == "strong" and screen.confidence == pytest.approx(0.85)
    [virtual] = closed("virtual", "video.synthetic_source")
    assert virtual.evidence["noise_sigma"] < 0.52
    assert virtual.evidence["strength"] == "weak" and "codec" in virtual.evidence["note"]
    assert 0.3 < virtual.confidence < 0.6
    for kind in ("astronaut", "cameraman", "still", "two", "empty"):
        assert closed(kind, "video.synthetic_source") == [], kind


def test_live_style_open_then_closed_reports() -> None:
    frozen = [d for d in detections("frozen") if d.signal == "video.frozen"]
    assert [(d.evidence["episode"], d.end is None) for d in frozen] == [
        ("open", True), ("closed", False)]
    assert frozen[0].t == frozen[1].t


def test_same_input_same_output() -> None:
    clip = corpus.clip_loop(3)
    assert run(clip) == run(clip)


def test_time_going_backwards_does_not_crash() -> None:
    a = VideoAnalyzer()
    frame = corpus.clip_person(0, dur=0.2).frames[0]
    for t in (5.0, 5.2, 1.0, 1.2, 9.0):
        a.push(frame, t)
    a.push(np.zeros((240, 320, 3), np.uint8), 9.5)
    assert all(d.end is not None for d in a.finish(10.0))


def _barred(clip: corpus.Clip, sides: str, level: int = 0, frac: float = 0.22) -> corpus.Clip:
    """``clip`` with black bars painted over its edges (after the VP8 round trip, as a
    recording that composited a 4:3 camera into 16:9 would show them)."""
    frames = []
    for f in clip.frames:
        g = f.copy()
        h, w = g.shape[:2]
        if sides == "pillar":
            b = int(w * frac)
            g[:, :b] = level
            g[:, w - b:] = level
        else:
            b = int(h * frac)
            g[:b] = level
            g[h - b:] = level
        frames.append(g)
    return corpus.Clip(clip.name + "-" + sides, frames, clip.labels, clip.fps)


@pytest.mark.parametrize("kind,level", [("pillar", 0), ("pillar", 16), ("letter", 0),
                                        ("letter", 20)])
def test_black_bars_raise_nothing(kind: str, level: int) -> None:
    # a dim room in a pillarbox used to be "obscured" (the bars darkened the picture), and
    # bars a little above black were "synthetic" (flat, noise-free pixels)
    for clip in (corpus.clip_dim_person(10), corpus.clip_person(11)):
        barred = _barred(corpus.vp8_round_trip(clip), kind, level)
        assert [d.signal for d in run(barred)] == [], barred.name


def test_a_covered_camera_in_bars_is_still_obscured() -> None:
    barred = _barred(corpus.vp8_round_trip(corpus.clip_covered(0)), "pillar")
    assert [d.evidence["kind"] for d in run(barred)
            if d.signal == "video.obscured" and d.end is not None] == ["dark"]


def test_two_people_in_bars_are_still_two() -> None:
    barred = _barred(corpus.vp8_round_trip(corpus.clip_two_people(0)), "letter", frac=0.1)
    assert {d.signal for d in run(barred) if d.end is not None} == {"video.extra_person"}
