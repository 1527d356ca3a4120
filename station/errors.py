"""One error type per layer; every error carries what happened and what to do.

The CLI prints ``str(err)`` as a single line on stderr, so messages must be
self-contained: cause first, then the fix.
"""

from __future__ import annotations


class StationError(Exception):
    """Base of every error we expect and can explain to a person."""

    layer = "station"

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what}. Fix: {self.fix}"


class ConfigError(StationError):
    """``problems`` lists every (file, key-path message, fix) found, not just the first."""

    layer = "config"

    def __init__(self, what: str, fix: str, problems: list[tuple] | None = None) -> None:
        super().__init__(what, fix)
        self.problems = problems or []


class KeyFileError(StationError):
    layer = "keys"


class DeviceError(StationError):
    """An instrument failed (translated from a driver error at
    ``station/instruments/seam.py``). ``transcript`` holds the last lines sent
    (``>``) and received (``<``) so a link failure can be debugged from the
    message alone; ``device`` is the config's name for the instrument."""

    layer = "device"

    def __init__(self, what: str, fix: str, transcript: list[str] | None = None, device: str = "") -> None:
        super().__init__(what, fix)
        self.transcript = list(transcript or [])
        self.device = device

    def __str__(self) -> str:
        base = super().__str__()
        if self.transcript:
            return f"{base}. Last lines: {' | '.join(self.transcript[-6:])}"
        return base


class DeviceRefusal(DeviceError):
    """The instrument answered, and said no (overload, not stable, wrong unit).
    The link is fine: the stone is aborted, without a reconnect."""


class MeasurementAborted(StationError):
    """A stone's measurement went wrong; nothing was recorded for it.
    ``device`` names the instrument at fault ("" when it was the stone)."""

    layer = "session"

    def __init__(self, what: str, fix: str, device: str = "") -> None:
        super().__init__(what, fix)
        self.device = device


class RecordError(StationError):
    """Building, signing or verifying a record failed."""

    layer = "record"


class OutboxError(StationError):
    layer = "outbox"


class PublishError(StationError):
    layer = "publish"


class ChainError(StationError):
    """The outbox is behind the chain head recorded outside it (lost records)."""

    layer = "chain"
