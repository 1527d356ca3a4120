"""The measurement cycle: one stone from detection to a stable reading.

    IDLE ──load>detect──▶ SETTLING ──n stable SI agree──▶ (final S) ──▶ AWAIT_REMOVAL ──pan empty──▶ IDLE
      balance refuses (overload, not stable, ...) ──▶ AWAIT_REMOVAL (stone aborted)
      link or protocol error ──▶ FAULT (stone aborted) ──device recovered──▶ AWAIT_REMOVAL

The cycle never records anything itself: it returns a Measurement and the
caller seals it. A stone whose measurement went wrong is aborted, never returned.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from station.records.carat import format_carats, straddled_thresholds
from station.config import CycleSection
from station.errors import DeviceError, DeviceRefusal, MeasurementAborted
from station.instruments.reading import MassReading


class State(enum.Enum):
    IDLE = "idle"
    SETTLING = "settling"
    AWAIT_REMOVAL = "await-removal"
    FAULT = "fault"


class Balance(Protocol):
    def weigh_now(self) -> MassReading: ...
    def weigh_stable(self) -> MassReading: ...
    def recover(self) -> None: ...


@dataclass(frozen=True)
class Event:
    kind: str  # detected, settling, measured, aborted, removed, fault, recovered
    message: str
    state: State


@dataclass(frozen=True)
class Measurement:
    readings: tuple[MassReading, ...]
    flags: tuple[str, ...] = ()

    @property
    def mass_ug(self) -> int:
        return self.readings[0].value_ug


@dataclass
class MeasurementCycle:
    balance: Balance
    cfg: CycleSection
    on_event: Callable[[Event], None] = lambda e: None
    clock: Callable[[], float] = time.monotonic
    state: State = State.IDLE
    fault: str | None = None  # what is wrong with the balance (the cause, no transcript)
    _settle_started: float = 0.0
    _agreeing: list[int] = field(default_factory=list)
    _refusal: str | None = None  # the balance's last refusal, told to the operator once

    def step(self) -> Measurement | None:
        """One poll of the balance. Returns a Measurement when a stone has settled."""
        try:
            if self.state is State.FAULT:
                self._recover()
                return None
            reading = self.balance.weigh_now()
            self._refusal = None
            if self.state is State.IDLE:
                self._idle(reading)
            elif self.state is State.SETTLING:
                return self._settling(reading)
            elif self.state is State.AWAIT_REMOVAL and reading.value_ug < self.cfg.removal_threshold_ug:
                self._go(State.IDLE, "removed", "Pan empty. Place the next stone.")
        except DeviceRefusal as exc:
            # The link is fine; the balance itself says no. No reconnect, just abort.
            if exc.what != self._refusal:  # not str(): the transcript part changes every poll
                self._refusal = exc.what
                lost = " Nothing was recorded for this stone." if self.state is State.SETTLING else ""
                self._go(State.AWAIT_REMOVAL, "aborted", f"{exc}.{lost}")
            else:
                self.state = State.AWAIT_REMOVAL
        except DeviceError as exc:
            self._abort_on_fault(exc)
        except MeasurementAborted as exc:
            self._go(State.AWAIT_REMOVAL, "aborted", f"{exc}. Remove the stone, then place it again.")
        return None

    def start_awaiting_removal(self, why: str) -> None:
        self._go(State.AWAIT_REMOVAL, "measured", why)

    def _idle(self, reading: MassReading) -> None:
        if reading.value_ug > self.cfg.detect_threshold_ug:
            self._settle_started = self.clock()
            self._agreeing = []
            self._go(State.SETTLING, "detected", "Stone detected. Settling — keep the draft shield closed.")

    def _settling(self, reading: MassReading) -> Measurement | None:
        if reading.value_ug < self.cfg.removal_threshold_ug:
            self._go(State.IDLE, "aborted", "Stone removed before it settled; nothing recorded.")
            return None
        if self.clock() - self._settle_started > self.cfg.settle_timeout_s:
            raise MeasurementAborted(
                f"the balance did not settle within {self.cfg.settle_timeout_s:g} s",
                "close the draft shield and keep the desk still",
            )
        if not reading.stable or (self._agreeing and abs(reading.value_ug - self._agreeing[-1]) > self.cfg.stable_tolerance_ug):
            self._agreeing = [reading.value_ug] if reading.stable else []
            return None
        self._agreeing.append(reading.value_ug)
        if len(self._agreeing) < self.cfg.stable_readings:
            return None
        final = self.balance.weigh_stable()
        if abs(final.value_ug - self._agreeing[-1]) > self.cfg.stable_tolerance_ug:
            raise MeasurementAborted(
                f"the final stable reading ({final.value_ug} µg) disagrees with the settled one "
                f"({self._agreeing[-1]} µg)",
                "keep the stone still on the pan",
            )
        flags = tuple(
            f"reweigh:{format_carats(t)}ct" for t in straddled_thresholds(final.value_ug, self.cfg.uncertainty_ug)
        )
        self.state = State.AWAIT_REMOVAL
        return Measurement(readings=(final,), flags=flags)

    def _abort_on_fault(self, exc: DeviceError) -> None:
        lost = " The stone in progress was aborted; nothing was recorded." if self.state is State.SETTLING else ""
        self.fault = exc.what
        self._go(State.FAULT, "fault", f"Balance fault: {exc}.{lost}")

    def _recover(self) -> None:
        try:
            self.balance.recover()
        except DeviceError as exc:  # still unreachable: stay in FAULT, tell only what changed
            if exc.what != self.fault:  # the cause, without the transcript that grows each try
                self.fault = exc.what
                self.on_event(Event("fault", f"Balance still unreachable: {exc}", self.state))
            return
        self.fault = None
        self._go(State.AWAIT_REMOVAL, "recovered", "Balance is back. Remove the stone, then place it again.")

    def _go(self, state: State, kind: str, message: str) -> None:
        self.state = state
        self.on_event(Event(kind, message, state))
