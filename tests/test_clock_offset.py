"""signals.clock.ClockOffset: a client clock's offset from its signals' arrival times."""

from __future__ import annotations

import pytest

from signals.clock import ClockOffset

NOW = 1_800_000_000_000


def test_a_correct_clock_is_never_moved() -> None:
    clock = ClockOffset()
    for i, delay in enumerate((40, 12, 900, 250)):  # network delays, jitter
        assert clock.observe(NOW + i * 5000 - delay, NOW + i * 5000) == 0


def test_a_clock_behind_or_ahead_is_corrected_by_its_smallest_lag() -> None:
    behind = ClockOffset()
    assert behind.observe(NOW - 60_080, NOW) == 60_080
    assert behind.observe(NOW + 5000 - 60_020, NOW + 5000) == 60_020
    ahead = ClockOffset()
    assert ahead.observe(NOW + 30_000, NOW + 50) == -29_950


def test_a_resent_backlog_does_not_inflate_the_estimate() -> None:
    clock = ClockOffset()
    clock.observe(NOW - 2_050, NOW)  # live: 2 s behind
    # a backlog resent after a 4-minute outage: each waited, so its lag is larger
    for waited in (230_000, 120_000, 10_000):
        assert clock.observe(NOW + 241_000 - 2_000 - waited, NOW + 241_000) == 2_050


def test_old_samples_leave_the_window() -> None:
    clock = ClockOffset(window_ms=60_000)
    clock.observe(NOW - 5_000, NOW)  # 5 s behind
    assert clock.observe(NOW + 30_000 - 8_000, NOW + 30_000) == 5_000  # a delayed one
    assert clock.offset(NOW + 61_000) == 8_000  # the first left the window
    assert clock.offset(NOW + 200_000) == 0  # nothing recent: no correction


def test_a_clock_set_right_is_followed_at_once() -> None:
    clock = ClockOffset()
    clock.observe(NOW - 5_000, NOW)  # 5 s behind, then set right: a smaller lag wins
    assert clock.observe(NOW + 30_000 - 20, NOW + 30_000) == 0


def test_a_sidecar_clock_stepping_back_starts_over() -> None:
    clock = ClockOffset()
    clock.observe(NOW - 9_000, NOW)
    assert clock.observe(NOW - 10_000 - 3_000, NOW - 10_000) == 3_000


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ClockOffset(window_ms=0)
    with pytest.raises(ValueError):
        ClockOffset(tolerance_ms=-1)


def test_a_signal_stamped_in_the_future_sets_the_estimate_while_in_the_window() -> None:
    """The documented limit: the minimum follows it, for up to the window."""
    clock = ClockOffset(window_ms=60_000)
    clock.observe(NOW - 30, NOW)
    assert clock.observe(NOW + 5000 + 240_000, NOW + 5000) == -240_000
    assert clock.observe(NOW + 66_000 - 30, NOW + 66_000) == 0  # it left the window
