"""When the publisher sends records again: after the broker refused them, and
when the central system has not acknowledged them in time."""

from __future__ import annotations


class RefusalRetry:
    """After the broker refused a publish: one retry of the whole window, from the
    oldest record, after a delay that doubles with each refused round (``low``
    to ``high`` seconds) and starts again once a record is delivered."""

    def __init__(self, low: float = 0.5, high: float = 30.0) -> None:
        self.low, self.high = low, high
        self.backoff = self.delay = low
        self.at: float | None = None  # monotonic time of the scheduled retry

    @property
    def pending(self) -> bool:
        return self.at is not None

    def refused(self, now: float) -> float:
        """Schedule the retry (once per round); returns its delay."""
        if self.at is None:
            self.delay = self.backoff
            self.backoff = min(self.backoff * 2, self.high)
            self.at = now + self.delay
        return self.delay

    def due(self, now: float) -> bool:
        return self.at is not None and now >= self.at

    def done(self) -> None:
        self.at = None

    def delivered(self) -> None:
        self.backoff = self.low


class ResendClock:
    """When published records count as overdue for the central system's ack.

    While the central side stays silent, each re-send round waits twice as long
    (up to ``cap_s``): a consumer that is down must not get a flood. The first
    ack that arrives resets the wait."""

    def __init__(self, ack_timeout_s: float, cap_s: float = 600.0, check_every_s: float = 1.0) -> None:
        self.ack_timeout = ack_timeout_s
        self.cap = max(ack_timeout_s, cap_s)
        self.wait = ack_timeout_s
        self.check_every = check_every_s  # looking for overdue records costs a query
        self._checked = float("-inf")

    def time_to_check(self, now: float) -> bool:
        """At most once per ``check_every`` (monotonic seconds)."""
        if now - self._checked < self.check_every:
            return False
        self._checked = now
        return True

    def resend_before(self, now_wall: float) -> float:
        """Records published before this wall time and still unacked are overdue."""
        return now_wall - self.wait

    def overdue(self, oldest_publish: float | None, now_wall: float) -> bool:
        return oldest_publish is not None and oldest_publish < self.resend_before(now_wall)

    def back_off(self) -> None:
        self.wait = min(self.wait * 2, self.cap)

    def answered(self) -> None:
        self.wait = self.ack_timeout
