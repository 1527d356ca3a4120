"""systemd readiness and watchdog pings (no-ops outside systemd)."""

from __future__ import annotations

import os
import time

import sdnotify


class Watchdog:
    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        # Ping at half the interval, as systemd recommends.
        self._interval = usec / 2e6 if usec else None
        self._last = 0.0

    def send(self, state: str) -> None:
        if self._notifier:
            self._notifier.notify(state)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def ping(self) -> None:
        if self._interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self.send("WATCHDOG=1")
            self._last = now
