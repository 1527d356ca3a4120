"""Typed events of the stone session and the station around it.

Every state change a person or the central system should know about is one
of these dataclasses, published on one in-process :class:`EventBus`. The
console, the retained MQTT status and a future operator UI subscribe to it;
nobody parses message strings.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    message: str  # what the operator reads
    level: str = field(default="info", init=False)  # ok, info, warn, fault (console colour)


@dataclass(frozen=True)
class Ready(Event):
    pass


@dataclass(frozen=True)
class PanLoadedAtStart(Event):
    recorded_seq: int | None  # the record of the stone on the pan, if it was recorded before the restart
    level: str = field(default="warn", init=False)


@dataclass(frozen=True)
class StoneDetected(Event):
    mass_ug: int


@dataclass(frozen=True)
class StoneMeasured(Event):
    mass_ug: int
    level: str = field(default="ok", init=False)


@dataclass(frozen=True)
class StoneRecorded(Event):
    seq: int
    mass_ug: int
    carat: str
    carat_raw: str
    flags: tuple[str, ...]
    level: str = field(default="ok", init=False)


@dataclass(frozen=True)
class StoneNotRecorded(Event):
    """Measured, but sealing failed (disk, outbox): nothing was stored."""

    reason: str
    level: str = field(default="fault", init=False)


@dataclass(frozen=True)
class StoneAborted(Event):
    device: str  # which instrument failed ("" when the stone itself was the problem)
    reason: str
    level: str = field(default="warn", init=False)


@dataclass(frozen=True)
class StoneRemoved(Event):
    pass


@dataclass(frozen=True)
class DeviceFault(Event):
    device: str
    reason: str
    level: str = field(default="fault", init=False)


@dataclass(frozen=True)
class DeviceRecovered(Event):
    device: str
    serial: str
    level: str = field(default="ok", init=False)


@dataclass(frozen=True)
class AmbientWarning(Event):
    status: str  # stale, missing
    level: str = field(default="warn", init=False)


@dataclass(frozen=True)
class StorageRefusing(Event):
    reason: str
    level: str = field(default="fault", init=False)


@dataclass(frozen=True)
class StorageOk(Event):
    pass


@dataclass(frozen=True)
class OutboxFull(Event):
    """The outbox holds as many unaccepted records (or bytes) as it may: no new
    measurement until the central system acknowledges some."""

    reason: str
    level: str = field(default="fault", init=False)


@dataclass(frozen=True)
class RecordRejected(Event):
    """The central system verified a record and refused it. The record stays in
    the outbox with this reason; a person has to look at it."""

    seq: int
    record_id: str
    reason: str
    level: str = field(default="fault", init=False)


@dataclass(frozen=True)
class Delivery(Event):
    """Broker and publisher news (connected, unreachable, refused a record)."""

    level: str = field(default="info", init=False)


class EventBus:
    """Synchronous fan-out; a failing subscriber is logged, never breaks the session."""

    def __init__(self) -> None:
        self._subs: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[Event], None]) -> None:
        with self._lock:
            self._subs.append(fn)

    def publish(self, event: Event) -> None:
        with self._lock:
            subs = list(self._subs)
        for fn in subs:
            try:
                fn(event)
            except Exception:
                _log.exception("event subscriber %r failed on %r", fn, event)
