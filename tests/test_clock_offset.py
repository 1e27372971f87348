"""signals.clock.ClockOffset: a client clock's offset from its signals' arrival times."""

from __future__ import annotations

import pytest

from signals.clock import ClockOffset

NOW = 1_800_000_000_000


def live(clock: ClockOffset, behind_ms: int, *arrivals_s: float, delay_ms: int = 30) -> int:
    """Signals from a device ``behind_ms`` behind, each sent live at ``arrivals_s``; the
    offset given to the last."""
    offset = 0
    for t in arrivals_s:
        now = NOW + int(t * 1000)
        offset = clock.observe(now - delay_ms - behind_ms, now)
    return offset


def test_a_correct_clock_is_never_moved() -> None:
    clock = ClockOffset()
    for i, delay in enumerate((40, 12, 900, 250)):  # network delays, jitter
        assert clock.observe(NOW + i * 5000 - delay, NOW + i * 5000) == 0


def test_a_clock_behind_or_ahead_is_corrected_once_two_live_signals_agree() -> None:
    behind = ClockOffset()
    assert live(behind, 60_000, 0) == 0  # one signal proves nothing yet
    assert live(behind, 60_000, 5) == 60_030
    ahead = ClockOffset()
    assert live(ahead, -30_000, 0, 5) == -29_970


def test_signals_arriving_together_do_not_confirm() -> None:
    clock = ClockOffset()
    assert live(clock, 60_000, 0, 0.5, 1.0) == 0  # less than 2 s apart


def test_a_resent_backlog_keeps_its_own_timing() -> None:
    """After a reconnect (or a sidecar restart) the backlog arrives at once, each signal
    having waited differently: it is not read as a clock offset."""
    clock = ClockOffset()
    for waited in (120_000, 90_000, 60_000, 30_000):
        assert clock.observe(NOW - waited, NOW + 5) == 0
    # then live signals 5 s apart confirm the true (correct) clock
    assert live(clock, 0, 5, 10) == 0


def test_a_backlog_after_a_confirmed_offset_is_moved_by_that_offset() -> None:
    clock = ClockOffset()
    live(clock, 2_000, 0, 5)
    for waited in (120_000, 30_000):
        assert clock.observe(NOW + 60_000 - 2_000 - waited, NOW + 60_000) == 2_030


def test_one_signal_stamped_in_the_future_moves_nothing() -> None:
    clock = ClockOffset()
    live(clock, 0, 0, 5)
    assert clock.observe(NOW + 10_000 + 240_000, NOW + 10_000) == 0  # a glitch
    assert live(clock, 0, 15, 20) == 0


def test_a_clock_set_right_is_followed_once_confirmed() -> None:
    clock = ClockOffset()
    assert live(clock, 5_000, 0, 5) == 5_030
    assert live(clock, 0, 30) == 5_030  # one signal: not yet
    assert live(clock, 0, 35) == 0


def test_the_estimate_expires_without_confirmation() -> None:
    clock = ClockOffset(window_ms=60_000)
    live(clock, 5_000, 0, 5)
    assert clock.offset(NOW + 64_000) == 5_030
    assert clock.offset(NOW + 66_000) == 0


def test_a_sidecar_clock_stepping_back_starts_over() -> None:
    clock = ClockOffset()
    live(clock, 9_000, 0, 5)
    assert clock.observe(NOW - 10_000 - 3_000, NOW - 10_000) == 0


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        ClockOffset(window_ms=0)
    with pytest.raises(ValueError):
        ClockOffset(tolerance_ms=-1)
    with pytest.raises(ValueError):
        ClockOffset(confirm_gap_ms=-1)
