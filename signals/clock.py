"""How far a client's clock is off the sidecar's, from its signals' arrival times.

A patient's device stamps each signal with its own clock (``at``); the sidecar's rules run
holds, absences and consent changes on its own clock. A device clock a minute behind made
every heartbeat look a minute old on arrival, so the 45 s absence timer fired in a healthy
session; a clock 2 s behind put a screen capture made just after the clinician approved
recording before the approval, and it was judged under the old policy.

Method: each signal's *lag* (arrival time minus ``at``) is the clock offset plus how long it
took to arrive (the network; for a signal queued while offline, the time it waited). The
smallest lag among the signals that arrived in the last ``window_ms`` is the estimate: a
live signal's delay is near zero, and waiting only ever adds to a lag, so a resent backlog
cannot pull the estimate away from the true offset while one live signal is in the window.
An estimate within ``tolerance_ms`` of zero is taken as no offset: a correct clock's signals
are never moved by network jitter.

The window (10 minutes) outlasts most outages, so a backlog resent after one is corrected by
the estimate from before it and keeps its own timing. After a longer outage, before any
live signal arrived, a resent signal's lag includes its wait, and the backlog is placed at
its arrival (as the sidecar did before with signals stamped more than
``limits.clock_skew_ms``, 5 minutes, off its clock).
A device clock that jumps ahead and back (a bad time sync), or a signal stamped in the
future by mistake, sets the estimate for as long as it stays in the window: the device's
signals are then placed earlier than they happened, by as much, for up to ``window_ms``.
No I/O; times are epoch milliseconds given by the caller.
"""

from __future__ import annotations

from collections import deque

__all__ = ["ClockOffset"]


class ClockOffset:
    """The sliding-window minimum of signal lags (arrival - ``at``), in milliseconds.

    Positive: the client's clock is behind the sidecar's (add the offset to its ``at``);
    negative: ahead.
    """

    __slots__ = ("_samples", "tolerance_ms", "window_ms")

    def __init__(self, window_ms: int = 600_000, tolerance_ms: int = 1_000) -> None:
        if window_ms <= 0 or tolerance_ms < 0:
            raise ValueError("window_ms must be positive and tolerance_ms not negative")
        self.window_ms = window_ms
        self.tolerance_ms = tolerance_ms
        # (arrival, lag), arrivals and lags increasing: the front is the minimum (a sample a
        # newer one undercuts can never be the minimum again: it leaves the window first)
        self._samples: deque[tuple[int, int]] = deque()

    def observe(self, at: int, now: int) -> int:
        """Count a signal stamped ``at`` that arrived at ``now``; the offset to apply to it
        (and to the signals that follow until the next one)."""
        samples = self._samples
        if samples and now < samples[-1][0]:  # the sidecar's clock stepped back
            samples.clear()
        lag = now - at
        while samples and samples[-1][1] >= lag:
            samples.pop()
        samples.append((now, lag))
        return self.offset(now)

    def offset(self, now: int) -> int:
        """The current estimate (0 when within the tolerance, or with no recent signal)."""
        samples = self._samples
        while samples and samples[0][0] < now - self.window_ms:
            samples.popleft()
        if not samples:
            return 0
        lag = samples[0][1]
        return lag if abs(lag) > self.tolerance_ms else 0
