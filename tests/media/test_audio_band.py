"""The band check (``signals/media/audio_band.py``): wideband speech reads wideband, the
same speech squeezed the ways a call can squeeze it (8 or 11 kHz, Opus at 8 kbit/s) reads
narrowband, silence decides nothing, and the verdict follows a change of microphone.

Speech is espeak-ng's (Debian ``espeak-ng``) over a seeded -60 dBFS room."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal as sps

from signals.errors import ConfigError
from signals.media.audio import AudioAnalyzer
from signals.media.audio_band import NARROWBAND
from signals.media.audio_params import audio_params_from_dict
from tests.media.corpus_audio import RATE, opus_round_trip, room_noise, speech

TEXT = ("Please tell me a little about how the week has been, and what you would like to "
        "talk about today. Take your time; there is no rush at all.")


def talk(seed: int = 1, repeat: int = 1) -> np.ndarray:
    x = np.tile(speech(TEXT), repeat)
    return (x + room_noise(len(x), np.random.default_rng(seed), -60.0)).astype(np.float32)


def band_limited(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` resampled to ``rate`` and back to 48 kHz: nothing above ``rate / 2`` is left."""
    g = np.gcd(rate, RATE)
    down = sps.resample_poly(x, rate // g, RATE // g)
    return np.asarray(sps.resample_poly(down, RATE // g, rate // g), dtype=np.float32)


def verdicts(x: np.ndarray, analyzer: AudioAnalyzer | None = None, rate: int = RATE,
             t0: float = 0.0) -> tuple[AudioAnalyzer, list[str]]:
    """Push ``x`` in 20 ms chunks; the analyzer and each band state it took, in order."""
    analyzer = analyzer or AudioAnalyzer()
    seen: list[str] = []
    step = rate // 50
    for i in range(0, len(x), step):
        analyzer.push(x[i:i + step], rate, t0 + i / rate)
        if not seen or seen[-1] != analyzer.band.state:
            seen.append(analyzer.band.state)
    return analyzer, seen


def test_wideband_speech_reads_wideband_and_stays_so() -> None:
    analyzer, seen = verdicts(talk())
    assert seen == ["unknown", "wideband"] and analyzer.limit is None
    assert analyzer.band.level_db is not None and analyzer.band.level_db > -44


@pytest.mark.parametrize("squeeze", ["8 kHz", "11.025 kHz", "Opus 8 kbit/s"])
def test_squeezed_speech_reads_narrowband(squeeze: str) -> None:
    x = talk(seed=2)
    y = {"8 kHz": lambda: band_limited(x, 8_000),
         "11.025 kHz": lambda: band_limited(x, 11_025),
         "Opus 8 kbit/s": lambda: opus_round_trip(x, 8_000)}[squeeze]()
    analyzer, seen = verdicts(y)
    assert seen == ["unknown", NARROWBAND] and analyzer.limit == NARROWBAND
    assert analyzer.band.level_db is not None and analyzer.band.level_db < -48


def test_audio_that_stays_narrowband_at_a_low_rate_reads_narrowband() -> None:
    # an 8 kHz stream pushed as it is (a telephone recording in `analyze`)
    x = sps.resample_poly(talk(seed=3), 1, 6).astype(np.float32)
    _, seen = verdicts(x, rate=8_000)
    assert seen[-1] == NARROWBAND


def test_wideband_at_16_khz_and_after_opus_at_24_kbit_reads_wideband() -> None:
    x = talk(seed=4)
    assert verdicts(band_limited(x, 16_000))[1][-1] == "wideband"
    assert verdicts(opus_round_trip(x, 24_000))[1][-1] == "wideband"


def test_silence_and_a_quiet_room_decide_nothing() -> None:
    rng = np.random.default_rng(5)
    quiet = room_noise(RATE * 8, rng, -60.0)
    for x in (np.zeros(RATE * 8, dtype=np.float32), quiet, band_limited(quiet, 8_000)):
        analyzer, seen = verdicts(x)
        assert seen == ["unknown"] and analyzer.band.level_db is None


def test_the_verdict_waits_for_enough_sound() -> None:
    x = talk(seed=6)
    short = band_limited(x, 8_000)[: int(RATE * 1.5)]  # under 3 s of sound
    assert verdicts(short)[1] == ["unknown"]


def test_the_verdict_follows_a_change_of_microphone() -> None:
    # a headset switches to its telephone mode mid-call, then back: the same 48 kHz stream
    wide, narrow = talk(seed=7, repeat=2), band_limited(talk(seed=8, repeat=2), 8_000)
    _, seen = verdicts(np.concatenate([wide, narrow, wide]))
    assert seen == ["unknown", "wideband", NARROWBAND, "wideband"]


def test_a_change_of_rate_starts_the_check_again() -> None:
    x = band_limited(talk(seed=9), 8_000)
    analyzer, seen = verdicts(x)
    assert seen[-1] == NARROWBAND
    y = sps.resample_poly(talk(seed=10), 1, 3).astype(np.float32)  # 16 kHz, wideband
    analyzer, seen = verdicts(y[: 16_000], analyzer, rate=16_000, t0=len(x) / RATE)
    assert seen == ["unknown"]


def test_disabled_band_check_stays_unknown() -> None:
    analyzer = AudioAnalyzer({"band": {"enabled": False}})
    _, seen = verdicts(band_limited(talk(seed=11), 8_000), analyzer)
    assert seen == ["unknown"]


@pytest.mark.parametrize(("band", "words"), [
    ({"top_band_hz": [7000, 6000]}, "top_band_hz"),
    ({"top_band_hz": [7010, 7100]}, "at least 125 Hz"),  # between two bins: none
    ({"narrow_below_db": -40, "wide_above_db": -50}, "wide_above_db"),
    ({"window_s": 2, "min_sound_s": 3}, "window_s"),
    ({"percentile": 0}, "percentile"),
    ({"limit": 1}, "limit"),
])
def test_bad_band_parameters_are_a_clear_error(band: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        audio_params_from_dict({"band": band})
    assert words in str(info.value)
