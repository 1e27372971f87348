"""The seam of docs/internals.md: ``AudioAnalyzer(params).push(samples, rate, t)`` and
``finish(t)``; parameters; clear errors for bad input; exact streaming resampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import signal as sps

from signals.errors import ConfigError, MediaError, SessionguardError
from signals.media import audio_stream
from signals.media.audio import AudioAnalyzer, AudioParams, audio_params_from_dict
from signals.media.audio_stream import Framer, StreamResampler
from signals.media.detection import Detection
from tests.media.corpus_audio import RATE, load_sound, room_noise

CONFIG = Path(__file__).resolve().parents[2] / "config" / "media_audio.yaml"


def test_shipped_config_is_valid_and_matches_the_defaults() -> None:
    data = yaml.safe_load(CONFIG.read_text())
    assert audio_params_from_dict(data) == AudioParams()
    assert audio_params_from_dict(data["audio"]) == AudioParams()
    assert AudioAnalyzer(data).params == AudioParams()


@pytest.mark.parametrize("bad", [
    {"shutter": {"min_clicks": 0}},
    {"shutter": {"band_hz": [5000, 3000]}},
    {"shutter": {"min_clicks": 5, "max_clicks": 3}},
    {"virtual_source": {"quiet_dbfs": -99}},
    {"virtual_source": {"min_gap_s": 2, "max_gap_s": 1}},
    {"virtual_source": {"unknown_key": 1}},
    {"shutter": "loud"},
    ["not", "a", "mapping"],
])
def test_bad_parameters_are_one_clear_config_error(bad: object) -> None:
    with pytest.raises(ConfigError) as info:
        AudioAnalyzer(bad)  # type: ignore[arg-type]
    assert str(info.value).startswith("audio parameters")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("samples", "rate", "t", "needle"), [
    (np.zeros((960, 2), dtype=np.float32), 48_000, 0.0, "mono"),
    (np.full(960, np.nan, dtype=np.float32), 48_000, 0.0, "NaN"),
    (np.zeros(960, dtype=np.float32), 0, 0.0, "outside"),
    (np.zeros(960, dtype=np.float32), True, 0.0, "integer"),
    (np.zeros(960, dtype=np.float32), 48_000.0, 0.0, "integer"),
    (np.zeros(960, dtype=np.float32), 48_000, -1.0, "time"),
    (np.zeros(960, dtype=np.float32), 48_000, float("inf"), "time"),
    (np.zeros(960, dtype=np.complex64), 48_000, 0.0, "PCM"),
    ([0.0] * 960, 48_000, 0.0, "numpy"),
    (np.zeros(48_000 * 61, dtype=np.float32), 48_000, 0.0, "smaller chunks"),
])
def test_bad_input_is_a_clear_media_error(samples: object, rate: object, t: float,
                                          needle: str) -> None:
    analyzer = AudioAnalyzer()
    with pytest.raises(MediaError, match=needle) as info:
        analyzer.push(samples, rate, t)  # type: ignore[arg-type]
    assert isinstance(info.value, SessionguardError)
    assert analyzer.push(np.zeros(960, dtype=np.float32), 48_000, 0.0) == []  # still usable


def test_integer_pcm_gives_the_same_detections_as_float() -> None:
    rng = np.random.default_rng(1)
    shot = load_sound("camera-shutter") * 0.3
    x = room_noise(RATE * 3, rng, -60.0)
    x[RATE: RATE + len(shot)] += shot
    pcm = np.round(x * 32767).astype(np.int16)

    def detect(samples: np.ndarray) -> list[Detection]:
        analyzer = AudioAnalyzer()
        out = [d for i in range(0, len(samples), 960)
               for d in analyzer.push(samples[i:i + 960], RATE, i / RATE)]
        return out + analyzer.finish(len(samples) / RATE)

    from_float = detect(pcm.astype(np.float32) / 32768)
    assert [d.signal for d in from_float] == ["audio.shutter"]
    assert detect(pcm) == from_float


def test_finish_is_idempotent_and_closes_the_stream() -> None:
    analyzer = AudioAnalyzer()
    analyzer.push(np.zeros(960, dtype=np.float32), 48_000, 0.0)
    assert analyzer.finish(0.02) == []
    assert analyzer.finish(0.02) == []
    with pytest.raises(MediaError, match="finished"):
        analyzer.push(np.zeros(960, dtype=np.float32), 48_000, 0.02)


def test_empty_chunks_and_rate_changes_are_fine() -> None:
    analyzer = AudioAnalyzer()
    assert analyzer.push(np.zeros(0, dtype=np.float32), 48_000, 0.0) == []
    for k in range(20):
        analyzer.push(np.zeros(441, dtype=np.float32), 44_100, k * 0.01)
    for k in range(20):
        analyzer.push(np.zeros(160, dtype=np.float32), 16_000, 0.2 + k * 0.01)
    assert analyzer.finish(0.4) == []


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_streaming_resampler_matches_one_shot_resample_poly(rate: int) -> None:
    rng = np.random.default_rng(rate)
    x = rng.standard_normal(rate).astype(np.float32)
    resampler = StreamResampler(rate)
    parts, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, rate // 20))
        parts.append(resampler.push(x[i:i + n]))
        i += n
    y = np.concatenate(parts)
    reference = sps.resample_poly(x, resampler.up, resampler.down)
    assert len(reference) - 40 <= len(y) <= len(reference)
    np.testing.assert_allclose(y, reference[: len(y)], atol=1e-5)


def test_framer_reports_exact_zeros_as_minus_infinity() -> None:
    framer = Framer((2000.0, 7500.0), t0=1.0)
    feats = framer.push(np.zeros(1600, dtype=np.float32))
    assert len(feats.block_db) == 10 and np.all(np.isneginf(feats.block_db))
    assert feats.block_t[0] == pytest.approx(1.0) and feats.block_t[1] == pytest.approx(1.01)
    assert len(feats) > 0 and np.all(np.isfinite(feats.high_db))


def _features(framer: Framer, x: np.ndarray, sizes: list[int]) -> dict[str, np.ndarray]:
    parts, i = [], 0
    for n in sizes:
        parts.append(framer.push(x[i:i + n]))
        i += n
    parts.append(framer.push(x[i:]))
    return {name: np.concatenate([getattr(p, name) for p in parts])
            for name in ("t", "high_db", "onset_flatness")}


def test_framer_features_do_not_depend_on_chunk_sizes() -> None:
    rng = np.random.default_rng(4)
    x = (0.05 * rng.standard_normal(16_000)).astype(np.float32)
    whole = _features(Framer((3000.0, 7500.0), 0.0), x, [])
    sizes = [int(n) for n in rng.integers(1, 700, size=60)]
    chunked = _features(Framer((3000.0, 7500.0), 0.0), x, sizes)
    for name, values in whole.items():
        # the FFT of a different batch of windows may round the last float32 bit differently
        np.testing.assert_allclose(chunked[name], values, rtol=1e-4, atol=1e-5, err_msg=name)


def _tone(seconds: float, level: float = 0.1) -> np.ndarray:
    t = np.arange(int(16_000 * seconds)) / 16_000
    # partials 1 kHz apart up to 7 kHz, as a chime puts in the high band (the 8 ms windows
    # resolve them: its plain flatness is low)
    return (level * sum(np.sin(2 * np.pi * 1000 * k * t) / k for k in range(1, 8))).astype(
        np.float32)


def test_onset_flatness_sees_a_click_through_a_tone_that_hides_it_from_plain_flatness(
        monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    x = _tone(0.5)
    at = 4000  # 0.25 s
    click = np.zeros_like(x)
    click[at:at + 48] = 0.1 * rng.standard_normal(48) * np.exp(-np.arange(48) / 12)
    feats = _features(Framer((3000.0, 7500.0), 0.0), x + click, [])
    near = np.abs(feats["t"] - at / 16_000) < 0.006  # the windows holding the click
    assert near.sum() >= 2
    # the partials underneath keep the windows' plain flatness (an onset floor of 1) under
    # the old 0.35 threshold ...
    monkeypatch.setattr(audio_stream, "ONSET_FLOOR", 1.0)
    plain = _features(Framer((3000.0, 7500.0), 0.0), x + click, [])["onset_flatness"]
    assert plain[near].max() < 0.35
    # ... while what is new in those windows is noise
    assert feats["onset_flatness"][near].max() > 0.3
    assert feats["onset_flatness"][~near].max() < 0.01  # and the steady tone is tonal


def test_onset_flatness_of_a_steady_tone_stays_tonal() -> None:
    x = np.concatenate([np.zeros(4000, dtype=np.float32), _tone(0.25)])
    feats = _features(Framer((3000.0, 7500.0), 0.0), x, [])
    steady = feats["t"] > 0.3
    assert steady.sum() > 20
    assert np.all(feats["onset_flatness"][steady] < 0.05)


@pytest.mark.parametrize("width", [1, 2])
def test_corpus_loader_centres_8_bit_wav_and_scales_16_bit(tmp_path: Path, width: int) -> None:
    """8-bit WAV samples are unsigned (128 is silence); Tux Paint's sounds are such files."""
    import wave

    from tests.media.corpus_audio import load_file

    t = np.arange(11_025) / 11_025
    wave_ = 0.5 * np.sin(2 * np.pi * 440 * t)
    raw = (np.round(wave_ * 127 + 128).astype(np.uint8).tobytes() if width == 1
           else np.round(wave_ * 32767).astype("<i2").tobytes())
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(width)
        w.setframerate(11_025)
        w.writeframes(raw)
    x = load_file(path)
    assert abs(float(np.mean(x))) < 0.01
    assert float(np.max(np.abs(x))) == pytest.approx(0.5, abs=0.03)
