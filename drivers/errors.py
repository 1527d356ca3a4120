"""The driver layer's errors. ``drivers/`` never imports ``station/``: the
station translates these at one seam (``station/instruments/seam.py``).

Every error carries what happened, what to do, and the last lines sent (``>``)
and received (``<``) on the link, so a failure can be debugged from the
message alone.
"""

from __future__ import annotations


class DriverError(Exception):
    def __init__(self, what: str, fix: str, transcript: list[str] | tuple[str, ...] | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix
        self.transcript = list(transcript or [])

    def __str__(self) -> str:
        base = f"{self.what}. Fix: {self.fix}"
        if self.transcript:
            return f"{base}. Last lines: {' | '.join(self.transcript[-6:])}"
        return base


class LinkError(DriverError):
    """The transport failed: port missing, unplugged, timed out."""


class ReplyTimeout(LinkError):
    """Nothing arrived in time; the port itself is still usable."""


class ProtocolError(DriverError):
    """The device sent bytes we cannot parse, or a reply that does not fit."""


class DeviceRefused(DriverError):
    """The device understood us and answered no (overload, not stable, error
    status, a unit we cannot use). The link is fine: no reconnect is needed."""
