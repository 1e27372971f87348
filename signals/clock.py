"""How far a client's clock is off the sidecar's, from its signals' arrival times.

A patient's device stamps each signal with its own clock (``at``); the sidecar's rules run
holds, absences and consent changes on its own clock. A device clock a minute behind made
every heartbeat look a minute old on arrival, so the 45 s absence timer fired in a healthy
session; a clock 2 s behind put a screen capture made just after the clinician approved
recording before the approval, and it was judged under the old policy.

Method: each signal's *lag* (arrival time minus ``at``) is the clock offset plus how long it
took to arrive (the network; for a signal queued while offline, the time it waited). Two
signals in a row that arrived at least ``confirm_gap_ms`` apart and whose lags agree within
``tolerance_ms`` were both live: the smaller of their lags is the estimate. A backlog resent
after a reconnect arrives all at once with lags as different as the times its signals waited,
so it never sets the estimate (its own timing is kept, as the device stamped it), and neither
does one signal stamped in the future by mistake. An estimate within ``tolerance_ms`` of zero
is taken as no offset: a correct clock's signals are never moved by network jitter. It is
kept for ``window_ms`` after it was last confirmed. One estimator serves one connection: two
devices of one participant have two clocks.

Until two such signals came (the first seconds of a connection), nothing is corrected: the
sidecar stamps liveness (heartbeats) with their arrival itself, so its absence timers never
depend on the device's clock. No I/O; times are epoch milliseconds given by the caller.
"""

from __future__ import annotations

__all__ = ["ClockOffset"]


class ClockOffset:
    """A client clock's offset, confirmed by two live signals in a row, in milliseconds.

    Positive: the client's clock is behind the sidecar's (add the offset to its ``at``);
    negative: ahead.
    """

    __slots__ = ("_confirmed", "_last", "confirm_gap_ms", "tolerance_ms", "window_ms")

    def __init__(self, window_ms: int = 600_000, tolerance_ms: int = 1_000,
                 confirm_gap_ms: int = 2_000) -> None:
        if window_ms <= 0 or tolerance_ms < 0 or confirm_gap_ms < 0:
            raise ValueError("window_ms must be positive, tolerance_ms and confirm_gap_ms "
                             "not negative")
        self.window_ms = window_ms
        self.tolerance_ms = tolerance_ms
        self.confirm_gap_ms = confirm_gap_ms
        self._last: tuple[int, int] | None = None       # (arrival, lag) of the last signal
        self._confirmed: tuple[int, int] | None = None  # (when, lag) last confirmed

    def observe(self, at: int, now: int) -> int:
        """Count a signal stamped ``at`` that arrived at ``now``; the offset to apply to it."""
        lag = now - at
        last, self._last = self._last, (now, lag)
        if last is not None and now < last[0]:  # the sidecar's clock stepped back
            self._confirmed = None
        elif (last is not None and now - last[0] >= self.confirm_gap_ms
              and abs(lag - last[1]) <= self.tolerance_ms):
            self._confirmed = (now, min(lag, last[1]))
        return self.offset(now)

    def offset(self, now: int) -> int:
        """The current estimate (0 when within the tolerance, unconfirmed, or too old)."""
        confirmed = self._confirmed
        if confirmed is None or now - confirmed[0] > self.window_ms:
            return 0
        return confirmed[1] if abs(confirmed[1]) > self.tolerance_ms else 0
