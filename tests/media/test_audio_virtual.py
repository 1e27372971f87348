"""``audio.virtual_source``: digital silence between speech fires it, a real (quiet) room
floor does not, an Opus round trip keeps digital silence digital, a long mute is not
evidence, and an episode is reported once."""

from __future__ import annotations

import json

import numpy as np
import pytest

from signals.media.audio import AudioAnalyzer
from signals.media.detection import Detection
from tests.media.corpus_audio import RATE, opus_round_trip, room_noise, virtual_source_clip

SIGNAL = "audio.virtual_source"


def run(samples: np.ndarray, analyzer: AudioAnalyzer | None = None, t0: float = 0.0,
        chunk: int = 960) -> list[Detection]:
    analyzer = analyzer or AudioAnalyzer()
    out: list[Detection] = []
    for i in range(0, len(samples), chunk):
        out.extend(analyzer.push(samples[i:i + chunk], RATE, t0 + i / RATE))
    return [d for d in out if d.signal == SIGNAL]


def tone_bursts(rng: np.random.Generator, count: int, gap_s: float,
                floor: np.ndarray | None = None) -> np.ndarray:
    """``count`` 0.4 s noisy tones separated by ``gap_s`` of ``floor`` (zeros by default)."""
    parts: list[np.ndarray] = []
    for _ in range(count):
        t = np.arange(int(0.4 * RATE)) / RATE
        parts.append((0.1 * np.sin(2 * np.pi * rng.uniform(150, 300) * t)
                      + 0.01 * rng.standard_normal(len(t))).astype(np.float32))
        parts.append(np.zeros(int(gap_s * RATE), dtype=np.float32))
    x = np.concatenate(parts)
    if floor is not None:
        x += floor[: len(x)]
    return x


@pytest.mark.parametrize("opus", [None, 32_000])
def test_digital_silence_between_speech_fires_once(opus: int | None) -> None:
    rng = np.random.default_rng(3)
    clip = virtual_source_clip(rng, "heldout", virtual=True, seconds=20.0, opus=opus)
    found = run(clip.samples)
    assert len(found) == 1, found
    det = found[0]
    assert det.end is None and 0.6 <= det.confidence <= 0.85
    assert det.evidence["gaps"] >= 2 and det.evidence["silence_s"] >= 3.0
    assert det.evidence["silence_max_dbfs"] is None or det.evidence["silence_max_dbfs"] < -98
    json.dumps(det.to_json(), allow_nan=False)


def test_opus_keeps_digital_silence_below_the_threshold() -> None:
    rng = np.random.default_rng(4)
    x = tone_bursts(rng, 4, 0.6)
    y = opus_round_trip(x, 24_000)
    # the first gap (0.4-1.0 s): the decoder's tail of the tone fades for about 0.25 s, then
    # every 10 ms block is below the threshold (-98 dBFS)
    gap = y[int(0.7 * RATE): int(0.95 * RATE)].astype(np.float64).reshape(-1, 480)
    levels = 10 * np.log10(np.mean(gap ** 2, axis=1) + 1e-30)
    assert levels.max() < -98


@pytest.mark.parametrize(("floor_dbfs", "opus"), [(-70.0, None), (-60.0, 32_000), (-45.0, None)])
def test_quiet_room_floor_does_not_fire(floor_dbfs: float, opus: int | None) -> None:
    rng = np.random.default_rng(int(-floor_dbfs))
    clip = virtual_source_clip(rng, "heldout", virtual=False, seconds=10.0,
                               floor_dbfs=floor_dbfs, opus=opus)
    assert run(clip.samples) == []


def test_one_long_mute_is_not_evidence() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([tone_bursts(rng, 1, 20.0), tone_bursts(rng, 1, 0.05)])
    assert run(x) == []


def test_leading_silence_before_any_sound_is_not_a_gap() -> None:
    rng = np.random.default_rng(6)
    x = np.concatenate([np.zeros(RATE * 5, dtype=np.float32), tone_bursts(rng, 2, 0.05)])
    assert run(x) == []


def test_short_gaps_add_up_and_real_floor_closes_the_episode() -> None:
    rng = np.random.default_rng(7)
    virtual = tone_bursts(rng, 6, 0.7)            # 4.2 s of silence in 6 gaps
    real = tone_bursts(rng, 14, 0.6, room_noise(RATE * 20, rng, -60.0))  # 8.4 s real floor
    analyzer = AudioAnalyzer()
    first = run(virtual, analyzer)
    assert len(first) == 1 and first[0].t == pytest.approx(0.4, abs=0.02)
    t = len(virtual) / RATE
    assert run(real, analyzer, t0=t) == []       # the episode closes quietly
    t += len(real) / RATE
    again = run(virtual, analyzer, t0=t)
    assert len(again) == 1 and again[0].t > t     # a new episode is a new report


def test_dropped_frames_break_a_gap() -> None:
    rng = np.random.default_rng(8)
    x = tone_bursts(rng, 6, 0.7)
    analyzer = AudioAnalyzer()
    out: list[Detection] = []
    for k, i in enumerate(range(0, len(x), 960)):
        if k % 10 in (5, 6, 7, 8):   # every 200 ms, 80 ms are lost: no gap is seen whole
            continue
        out.extend(analyzer.push(x[i:i + 960], RATE, i / RATE))
    assert [d for d in out if d.signal == SIGNAL] == []


def test_few_gaps_are_not_enough() -> None:
    rng = np.random.default_rng(9)
    assert run(tone_bursts(rng, 2, 1.0)) == []     # 2 s of silence: below min_silence_s
