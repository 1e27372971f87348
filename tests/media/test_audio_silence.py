"""The muted check (``signals/media/audio_silence.py``): a track that sends nothing but digital
silence for ``after_s`` of media time is silent until a sound comes; a quiet room is not.
Pure: chunks and their times are made up here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from signals.errors import MediaError
from signals.media.audio_silence import MUTED_AFTER_S, ONE_LSB, SilenceWatch, peak_level

FRAME_S = 0.02  # the 20 ms frames of a WebRTC audio track


def feed(watch: SilenceWatch, peaks: list[float], t0: float = 0.0) -> list[bool]:
    """Push one 20 ms chunk per peak from ``t0``; the verdict after each."""
    return [watch.push(p, t0 + i * FRAME_S, FRAME_S) for i, p in enumerate(peaks)]


def test_digital_silence_is_muted_after_after_s_and_a_sound_clears_it() -> None:
    watch = SilenceWatch(after_s=5.0)
    frames = round(5.0 / FRAME_S)  # 250 frames span 5 s
    verdicts = feed(watch, [0.0] * frames)
    assert not any(verdicts[:-1]) and verdicts[-1]  # exactly when the run spans 5 s
    assert watch.silent
    # the first chunk with a sound in it clears it at once
    assert watch.push(0.01, frames * FRAME_S, FRAME_S) is False and not watch.silent
    # and a new run must span the whole time again
    assert not any(feed(watch, [0.0] * (frames - 1), (frames + 1) * FRAME_S))


def test_one_step_of_16_bit_audio_is_still_silence_two_are_not() -> None:
    """Chromium's muted microphone decodes to samples of -1..1 (16-bit); a real floor does not."""
    assert feed(SilenceWatch(after_s=1.0), [ONE_LSB] * 50)[-1]
    assert not any(feed(SilenceWatch(after_s=1.0), [ONE_LSB] * 49 + [2 * ONE_LSB] + [0.0] * 49))


def test_a_quiet_room_is_never_muted() -> None:
    """A -75 dBFS room (seeded noise): every 20 ms chunk peaks far above one step."""
    rng = np.random.default_rng(5)
    room = (rng.standard_normal(48_000 * 10) * 10 ** (-75 / 20) * 32768).astype(np.int16)
    watch = SilenceWatch(after_s=1.0)
    chunks = room.reshape(-1, 960)
    assert not any(watch.push(peak_level(c), i * FRAME_S, FRAME_S) for i, c in enumerate(chunks))


def test_the_run_spans_gaps_in_time_and_restarts_when_time_goes_back() -> None:
    watch = SilenceWatch(after_s=5.0)
    # a sender with DTX: a silent frame now and then, 4 s apart
    assert [watch.push(0.0, t, FRAME_S) for t in (0.0, 4.0, 8.0)] == [False, False, True]
    # time that goes back starts a new run there; no sound came, so it stays silent
    assert watch.push(0.0, 1.0, FRAME_S) is True
    assert watch.push(0.5, 1.1, FRAME_S) is False
    assert watch.push(0.0, 1.2, FRAME_S) is False


def test_a_nan_peak_counts_as_sound() -> None:
    watch = SilenceWatch(after_s=0.04)
    assert feed(watch, [0.0, 0.0])[-1]
    assert watch.push(math.nan, 0.04, FRAME_S) is False


@pytest.mark.parametrize(("samples", "peak"), [
    (np.array([[0, 1, -1, 0]], np.int16), 1 / 32768),
    (np.array([[0, -32768]], np.int16), 1.0),  # no overflow at the most negative sample
    (np.array([[5, -3], [2, -7]], np.int32), 7 / 2**31),
    (np.array([128, 129, 127], np.uint8), 1 / 128),  # unsigned PCM around its middle
    (np.array([0.25, -0.5], np.float32), 0.5),
    (np.zeros(0, np.int16), 0.0),
])
def test_peak_level_is_the_largest_magnitude_as_a_fraction_of_full_scale(
        samples: np.ndarray, peak: float) -> None:
    assert peak_level(samples) == pytest.approx(peak)


def test_peak_level_of_what_is_not_pcm_is_never_silence() -> None:
    assert peak_level(np.array([0.0, np.nan], np.float32)) == math.inf
    assert peak_level(np.array([b"ab"])) == math.inf


@pytest.mark.parametrize("after_s", [0, -1.0, math.inf, math.nan, "5"])
def test_a_bad_after_s_is_a_clear_error(after_s: object) -> None:
    with pytest.raises(MediaError, match="after_s"):
        SilenceWatch(after_s=after_s)  # type: ignore[arg-type]


def test_the_default_is_five_seconds_within_virtual_sources_max_gap() -> None:
    """Runs longer than ``virtual_source.max_gap_s`` look like a muted track to that
    detector, which leaves them alone: this limit reports them, sooner."""
    from signals.media.audio_params import VirtualSourceParams

    assert MUTED_AFTER_S == 5.0 <= VirtualSourceParams().max_gap_s
    assert SilenceWatch().after_s == MUTED_AFTER_S
