"""``audio.shutter`` on generated clips: real shutter recordings in speech and after Opus
fire it; every other sound of the theme and synthesised typing, knocks, coughs and doors do
not (see tests/media/corpus_audio.py for the material)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signals.media.audio import AudioAnalyzer
from signals.media.audio_shutter import row_percentile
from signals.media.detection import Detection
from tests.media.corpus_audio import (
    DISTRACTOR_SOUNDS,
    RATE,
    SHUTTER_SOUNDS,
    SOUNDS,
    Clip,
    keyboard_typing,
    load_file,
    load_sound,
    room_echo,
    room_noise,
    shutter_clip,
)


def run(samples: np.ndarray, chunk: int = 960, analyzer: AudioAnalyzer | None = None,
        ) -> list[Detection]:
    analyzer = analyzer or AudioAnalyzer()
    out: list[Detection] = []
    for i in range(0, len(samples), chunk):
        out.extend(analyzer.push(samples[i:i + chunk], RATE, i / RATE))
    out.extend(analyzer.finish(len(samples) / RATE))
    return out


def shutters(clip: Clip) -> list[Detection]:
    return [d for d in run(clip.samples) if d.signal == "audio.shutter"]


def assert_found(clip: Clip) -> Detection:
    found = shutters(clip)
    label = clip.labels[0]
    assert len(found) == 1, (clip.name, found)
    det = found[0]
    assert label.t - 0.15 <= det.t <= label.end, (det, label)
    assert det.end is not None and det.t < det.end <= label.end + 0.15
    assert 0.5 <= det.confidence <= 0.9
    assert det.evidence["method"] == "click-cluster" and det.evidence["clicks"] >= 3
    json.dumps(det.to_json(), allow_nan=False)
    return det


@pytest.mark.parametrize("sound", SHUTTER_SOUNDS)
@pytest.mark.parametrize("seed", [11, 12])
def test_shutter_in_speech_fires(sound: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clip = shutter_clip(rng, "heldout", event=sound, positive=True, seconds=4.0,
                        snr_db=0.0, floor_dbfs=-55.0)
    assert_found(clip)


@pytest.mark.parametrize("bitrate", [24_000, 48_000])
def test_shutter_after_opus_fires(bitrate: int) -> None:
    rng = np.random.default_rng(bitrate)
    clip = shutter_clip(rng, "heldout", event="camera-shutter", positive=True, seconds=4.0,
                        snr_db=3.0, floor_dbfs=-60.0, opus=bitrate)
    assert_found(clip)


def test_shutter_in_a_quiet_room_fires_once_per_shot() -> None:
    rng = np.random.default_rng(5)
    shot = load_sound("screen-capture") * 0.3
    x = room_noise(RATE * 5, rng, -60.0)
    for start in (0.5, 3.0):
        i = int(start * RATE)
        x[i:i + len(shot)] += shot
    found = [d for d in run(x) if d.signal == "audio.shutter"]
    assert len(found) == 2, found
    assert all(abs(d.t - s) < 0.15 for d, s in zip(found, (0.5, 3.0), strict=True))


@pytest.mark.parametrize("sound", DISTRACTOR_SOUNDS)
def test_theme_distractors_stay_silent(sound: str) -> None:
    rng = np.random.default_rng(DISTRACTOR_SOUNDS.index(sound))
    clip = shutter_clip(rng, "dev", event=sound, positive=False, seconds=2.5, snr_db=3.0,
                        floor_dbfs=-55.0)
    assert shutters(clip) == []


@pytest.mark.parametrize("kind", ["typing", "knock", "cough", "door"])
@pytest.mark.parametrize("seed", [1, 2])
def test_synthetic_distractors_stay_silent(kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    clip = shutter_clip(rng, "heldout", event=kind, positive=False, seconds=4.0,
                        snr_db=6.0, floor_dbfs=-55.0, opus=32_000 if seed == 2 else None)
    assert shutters(clip) == []


def test_typing_alone_in_a_quiet_room_stays_silent() -> None:
    rng = np.random.default_rng(9)
    x = keyboard_typing(rng, 6.0) * 0.2 + room_noise(RATE * 6, rng, -65.0)
    assert [d for d in run(x) if d.signal == "audio.shutter"] == []


def test_detection_does_not_depend_on_chunk_size() -> None:
    rng = np.random.default_rng(21)
    clip = shutter_clip(rng, "dev", event="camera-shutter", positive=True, seconds=3.0)
    reference = run(clip.samples, chunk=960)
    assert len([d for d in reference if d.signal == "audio.shutter"]) == 1
    for chunk in (441, 1234, 48_000):
        assert run(clip.samples, chunk=chunk) == reference


def _sound_file(name: str) -> np.ndarray:
    """A theme sound as its file holds it, untrimmed (camera-shutter.oga opens with 61 ms of
    digital silence, less than the 160 ms of context a click is judged against)."""
    return load_file(SOUNDS / f"{name}.oga", trim=False)


def test_shutter_at_the_start_of_a_stream_fires() -> None:
    # `sessionguard analyze camera-shutter.oga`: the stream opens with the shutter; the time
    # before a stream is taken as silence, as a player would play the file
    x = _sound_file("camera-shutter")
    found = [d for d in run(x) if d.signal == "audio.shutter"]
    assert len(found) == 1, found
    assert 0.06 <= found[0].t <= 0.2
    # the same, for every way of cutting the stream into chunks
    for chunk in (441, 1234, 48_000):
        assert run(x, chunk=chunk) == run(x)


def test_shutter_at_the_start_is_judged_as_after_a_quiet_moment() -> None:
    rng = np.random.default_rng(4)
    shot = load_sound("camera-shutter") * 0.3
    quiet = np.zeros(RATE, dtype=np.float32)
    at_start = [d for d in run(shot) if d.signal == "audio.shutter"]
    later = [d for d in run(np.concatenate([quiet, shot])) if d.signal == "audio.shutter"]
    assert len(at_start) == len(later) == 1
    # the same clicks; only their rise differs (above silence either way, by > 50 dB)
    start_ev, later_ev = dict(at_start[0].evidence), dict(later[0].evidence)
    assert min(start_ev.pop("rise_db"), later_ev.pop("rise_db")) > 50
    assert start_ev == later_ev
    assert at_start[0].t == pytest.approx(later[0].t - 1.0, abs=0.005)
    # a stream that opens in the middle of a loud sound is not a click at its first frame:
    # a steady noise burst cut at sample 0 raises nothing
    burst = (rng.normal(0, 0.1, RATE)).astype(np.float32)
    assert [d for d in run(burst) if d.signal == "audio.shutter"] == []


def test_after_a_gap_clicks_wait_for_new_context() -> None:
    # a jump in the stream's time restarts the framing: the frames after it are judged only
    # once 160 ms of new ones are there (what came in between is unknown, not silence)
    shot = load_sound("camera-shutter") * 0.3
    analyzer = AudioAnalyzer()
    rng = np.random.default_rng(8)
    lead = room_noise(RATE, rng, -60.0)
    out: list[Detection] = []
    for i in range(0, len(lead), 960):
        out.extend(analyzer.push(lead[i:i + 960], RATE, i / RATE))
    resumed = shot.astype(np.float32)
    for i in range(0, len(resumed), 960):
        out.extend(analyzer.push(resumed[i:i + 960], RATE, 5.0 + i / RATE))
    out.extend(analyzer.finish(5.0 + len(resumed) / RATE))
    assert [d for d in out if d.signal == "audio.shutter"] == []


def _bursts(offsets_ms: list[float], seed: int) -> np.ndarray:
    """Short decaying white-noise bursts (each about 1 ms) at ``offsets_ms`` after 1 s of a
    -60 dBFS room, 2 s in all."""
    rng = np.random.default_rng(seed)
    x = room_noise(RATE * 2, rng, -60.0)
    n = int(0.004 * RATE)
    shape = np.exp(-np.arange(n) / (0.001 * RATE)).astype(np.float32)
    for ms in offsets_ms:
        i = int((1.0 + ms / 1000) * RATE)
        x[i:i + n] += 0.2 * rng.standard_normal(n).astype(np.float32) * shape
    return x


def test_a_ripple_within_a_clicks_decay_is_not_another_click() -> None:
    # Three bursts 30 ms apart are three clicks: a shutter.
    spaced = [d for d in run(_bursts([0, 30, 60], seed=3)) if d.signal == "audio.shutter"]
    assert len(spaced) == 1 and spaced[0].evidence["clicks"] == 3, spaced
    # Two of them 8 ms apart are one click's ripple (a noisy plosive burst in speech does
    # this): two clicks, too few for a shutter.
    assert [d for d in run(_bursts([0, 8, 60], seed=3)) if d.signal == "audio.shutter"] == []
    # A fourth burst 8 ms after the last makes three clicks again, counted once each.
    four = [d for d in run(_bursts([0, 8, 60, 68, 100], seed=3))
            if d.signal == "audio.shutter"]
    assert len(four) == 1 and four[0].evidence["clicks"] == 3, four


def test_room_echo_has_the_asked_direct_to_reverberant_ratio() -> None:
    echo = room_echo(np.random.default_rng(1), 0.5, 5.0)
    tail = float(np.sum(echo[1:].astype(np.float64) ** 2))
    assert 10 * np.log10(1.0 / tail) == pytest.approx(5.0, abs=0.1)
    assert len(echo) == int(RATE * 0.6)


def test_shutter_through_a_room_near_the_microphone_fires() -> None:
    # a phone held near the laptop: its direct sound 10 dB over the room's echo (0.5 s of
    # reverberation); the echo must not smear the clicks into one
    shot = load_sound("camera-shutter")
    found = 0
    for seed in range(6):
        wet = np.convolve(shot, room_echo(np.random.default_rng(3000 + seed), 0.5, 10.0))
        clip = shutter_clip(np.random.default_rng(2000 + seed), "heldout",
                            event="camera-shutter", positive=True, seconds=4.0, snr_db=3.0,
                            floor_dbfs=-60.0, sound=wet.astype(np.float32))
        label = clip.labels[0]
        found += any(label.t - 0.15 <= d.t <= label.end + 0.15 for d in shutters(clip))
    assert found >= 5


def test_disabled_shutter_reports_nothing() -> None:
    rng = np.random.default_rng(21)
    clip = shutter_clip(rng, "dev", event="camera-shutter", positive=True, seconds=3.0)
    analyzer = AudioAnalyzer({"shutter": {"enabled": False}})
    assert [d for d in run(clip.samples, analyzer=analyzer) if d.signal == "audio.shutter"] == []


@pytest.mark.parametrize("q", [0.0, 10.0, 25.0, 37.5, 50.0, 62.5, 90.0, 100.0])
@pytest.mark.parametrize("width", [3, 4, 40, 41, 250])
def test_row_percentile_is_numpys_percentile(q: float, width: int) -> None:
    rng = np.random.default_rng(int(q * 10) + width)
    rows = rng.normal(-50, 12, (30, width))
    rows[::3] = np.round(rows[::3])  # ties
    rows[5] = -80.0  # a constant row
    assert np.array_equal(row_percentile(rows, q), np.percentile(rows, q, axis=1))
