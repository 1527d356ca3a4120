"""The stone session: one stone from detection to one record, as a state machine.

    START ─pan empty─▶ IDLE ─load > detect─▶ SETTLING ─n stable readings agree─▶ final stable weight
      │                  ▲                       │          ─▶ ambient ─▶ each further step ─▶ Measurement
      └─pan loaded─▶ AWAIT_REMOVAL ◀─────────────┴── recorded / aborted / refused
                         └─pan < removal─▶ IDLE
    any link or protocol fault of the scale ─▶ FAULT (stone aborted) ─recovered─▶ AWAIT_REMOVAL or IDLE

The session never records anything itself: ``step()`` returns a Measurement
and the caller seals it, then calls :meth:`recorded` or :meth:`not_recorded`.
It always knows whether the stone on the pan was recorded (``on_pan``), so a
fault or a restart never invites the operator to record a stone twice.
Instruments, time and events are injected: tests drive it with fakes.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from station.config import CycleSection
from station.errors import DeviceError, DeviceRefusal, MeasurementAborted
from station.instruments.reading import AmbientStatus, DeviceIdentity, Reading
from station.records.carat import format_carats, format_raw_carats, straddled_thresholds
from station.session import events as ev


class Phase(enum.Enum):
    START = "start"
    IDLE = "idle"
    SETTLING = "settling"
    AWAIT_REMOVAL = "await-removal"
    FAULT = "fault"


class Scale(Protocol):
    name: str

    def weigh_now(self) -> Reading: ...
    def weigh_stable(self) -> Reading: ...
    def recover(self) -> DeviceIdentity: ...


class Ambient(Protocol):
    name: str
    required: bool

    def sample(self) -> AmbientStatus: ...


class Step(Protocol):
    """A further instrument step after the stable weight (spectrometer, camera)."""

    name: str

    def run(self, mass: Reading) -> Sequence[Reading]: ...


@dataclass(frozen=True)
class Measurement:
    readings: tuple[Reading, ...]  # the mass first, then each step's readings in order
    ambient: AmbientStatus | None = None
    flags: tuple[str, ...] = ()

    @property
    def mass_ug(self) -> int:
        return self.readings[0].value_ug


class StoneSession:
    def __init__(
        self,
        scale: Scale,
        cfg: CycleSection,
        *,
        steps: Sequence[Step] = (),
        ambient: Ambient | None = None,
        emit: Callable[[ev.Event], None] = lambda e: None,
        clock: Callable[[], float] = time.monotonic,
        on_pan: int | None = None,
    ) -> None:
        self.scale, self.cfg, self.steps, self.ambient = scale, cfg, tuple(steps), ambient
        self.emit, self.clock = emit, clock
        self.phase = Phase.START
        # Seq of the record of the stone now on the pan; None when the pan is
        # empty or holds a stone that was not recorded. Survives restarts via
        # the caller (it is stored with the record).
        self.on_pan = on_pan
        self.fault: str | None = None  # the scale's current fault (cause only, no transcript)
        self._settle_started = 0.0
        self._agreeing: list[int] = []
        self._refusal: str | None = None  # the scale's last refusal, told to the operator once
        self._ambient_status = "ok"

    # -- the caller's side -------------------------------------------------

    def step(self) -> Measurement | None:
        """One poll of the scale. Returns a Measurement when a stone is fully measured."""
        try:
            if self.phase is Phase.FAULT:
                self._recover()
                return None
            reading = self.scale.weigh_now()
            self._refusal = None
            if self.phase is Phase.START:
                self._start(reading)
            elif self.phase is Phase.IDLE:
                self._idle(reading)
            elif self.phase is Phase.SETTLING:
                return self._settling(reading)
            elif self.phase is Phase.AWAIT_REMOVAL:
                self._await_removal(reading)
        except DeviceRefusal as exc:
            self._refused(exc)
        except DeviceError as exc:
            self._scale_fault(exc)
        except MeasurementAborted as exc:
            self._abort(exc.device, f"{exc.what}. Fix: {exc.fix}")
        return None

    def recorded(self, seq: int, m: Measurement) -> None:
        mass = m.mass_ug
        self.on_pan = seq
        self._go(Phase.AWAIT_REMOVAL)
        flags = f" — {', '.join(m.flags)}: weigh again on a second balance" if m.flags else ""
        notes = "".join(f"; {r.note}" for r in m.readings[1:] if r.note)
        self.emit(ev.StoneRecorded(
            f"Recorded #{seq}: {format_carats(mass)} ct ({format_raw_carats(mass)} ct raw), {mass} µg{notes}{flags}. "
            "Remove the stone.",
            seq, mass, format_carats(mass), format_raw_carats(mass), tuple(m.flags)))

    def not_recorded(self, reason: str) -> None:
        self._go(Phase.AWAIT_REMOVAL)
        self.emit(ev.StoneNotRecorded(f"NOT RECORDED: {reason}. Remove the stone and measure it again later.", reason))

    def scale_unreachable(self, what: str) -> None:
        """The scale could not be reached at start-up: begin in FAULT, which keeps retrying."""
        self.fault = what
        self._go(Phase.FAULT)

    # -- phases ------------------------------------------------------------

    def _start(self, reading: Reading) -> None:
        if reading.value_ug < self.cfg.removal_threshold_ug:
            self.on_pan = None
            self._go(Phase.IDLE)
            self.emit(ev.Ready("Ready. Place the first stone."))
            return
        self._go(Phase.AWAIT_REMOVAL)
        if self.on_pan is not None:
            msg = f"A stone is on the pan at start-up; it is already recorded as #{self.on_pan}. Remove it."
        else:
            msg = "A stone is on the pan at start-up and was NOT recorded. Remove it, then place it again."
        self.emit(ev.PanLoadedAtStart(msg, self.on_pan))

    def _idle(self, reading: Reading) -> None:
        if reading.value_ug > self.cfg.detect_threshold_ug:
            self._settle_started = self.clock()
            self._agreeing = []
            self._go(Phase.SETTLING)
            self.emit(ev.StoneDetected("Stone detected. Settling — keep the draft shield closed.", reading.value_ug))

    def _await_removal(self, reading: Reading) -> None:
        if reading.value_ug < self.cfg.removal_threshold_ug:
            self.on_pan = None
            self._go(Phase.IDLE)
            self.emit(ev.StoneRemoved("Pan empty. Place the next stone."))

    def _settling(self, reading: Reading) -> Measurement | None:
        if reading.value_ug < self.cfg.removal_threshold_ug:
            self._go(Phase.IDLE)
            self.emit(ev.StoneAborted("Stone removed before it settled; nothing recorded.", "", "removed early"))
            return None
        if self.clock() - self._settle_started > self.cfg.settle_timeout_s:
            raise MeasurementAborted(f"the stone did not settle within {self.cfg.settle_timeout_s:g} s",
                                     "close the draft shield and keep the desk still")
        if not reading.stable:
            self._agreeing = []
            return None
        if self._agreeing and abs(reading.value_ug - self._agreeing[-1]) > self.cfg.stable_tolerance_ug:
            self._agreeing = [reading.value_ug]
            return None
        self._agreeing.append(reading.value_ug)
        if len(self._agreeing) < self.cfg.stable_readings:
            return None
        return self._measure(self._agreeing[-1])

    def _measure(self, settled_ug: int) -> Measurement | None:
        final = self.scale.weigh_stable()
        if abs(final.value_ug - settled_ug) > self.cfg.stable_tolerance_ug:
            raise MeasurementAborted(
                f"the final stable reading ({final.value_ug} µg) disagrees with the settled one ({settled_ug} µg)",
                "keep the stone still on the pan")
        self.emit(ev.StoneMeasured(f"Stable at {final.value_ug} µg.", final.value_ug))
        ambient = self._ambient()
        readings = [final]
        for step in self.steps:
            try:
                readings.extend(step.run(final))
            except (DeviceError, MeasurementAborted) as exc:
                raise MeasurementAborted(f"{step.name}: {exc.what}", exc.fix, device=step.name) from exc
        flags = tuple(f"reweigh:{format_carats(t)}ct"
                      for t in straddled_thresholds(final.value_ug, self.cfg.uncertainty_ug))
        self.phase = Phase.AWAIT_REMOVAL  # the caller seals it and then says recorded() or not_recorded()
        return Measurement(readings=tuple(readings), ambient=ambient, flags=flags)

    def _ambient(self) -> AmbientStatus | None:
        if self.ambient is None:
            return None
        status = self.ambient.sample()
        if status.status != "ok" and self.ambient.required:
            raise MeasurementAborted(f"the ambient sensor is required and {status.status}: {status.message}",
                                     "check the sensor's cable; or set required = false in its config",
                                     device=self.ambient.name)
        if status.status != self._ambient_status:
            self._ambient_status = status.status
            if status.status == "ok":
                self.emit(ev.AmbientWarning(f"Ambient sensor {self.ambient.name} is back.", "ok"))
            else:
                self.emit(ev.AmbientWarning(f"Warning: {status.message}. Stones are still recorded, "
                                            f"with ambient marked {status.status}.", status.status))
        return status

    # -- failures ----------------------------------------------------------

    def _abort(self, device: str, why: str) -> None:
        self._go(Phase.AWAIT_REMOVAL)
        self.emit(ev.StoneAborted(f"{why}. Nothing was recorded for this stone: remove it, then place it again.",
                                  device, why))

    def _refused(self, exc: DeviceRefusal) -> None:
        # The link is fine; the scale itself says no. No reconnect; tell once.
        was = self.phase
        self._go(Phase.AWAIT_REMOVAL if was is not Phase.START else Phase.START)
        if exc.what == self._refusal:  # not str(): the transcript part changes every poll
            return
        self._refusal = exc.what
        if was is Phase.SETTLING:
            self._abort(self.scale.name, f"{self.scale.name}: {exc.what}. Fix: {exc.fix}")
        else:
            self.emit(ev.DeviceFault(f"{self.scale.name}: {exc.what}. Fix: {exc.fix}", self.scale.name, exc.what))

    def _scale_fault(self, exc: DeviceError) -> None:
        lost = ""
        if self.phase is Phase.SETTLING:
            lost = " The stone in progress was aborted; nothing was recorded."
        self.fault = exc.what
        self._go(Phase.FAULT)
        self.emit(ev.DeviceFault(f"{self.scale.name} fault: {exc}.{lost}", self.scale.name, exc.what))

    def _recover(self) -> None:
        try:
            ident = self.scale.recover()
        except DeviceError as exc:  # still unreachable: stay in FAULT, tell only what changed
            if exc.what != self.fault:  # the cause, without the transcript that grows each try
                self.fault = exc.what
                self.emit(ev.DeviceFault(f"{self.scale.name} still unreachable: {exc}", self.scale.name, exc.what))
            return
        self.fault = None
        # Back, but what is on the pan? A refusal or a new fault here is
        # handled by step() like any other poll.
        reading = self.scale.weigh_now()
        if reading.value_ug < self.cfg.removal_threshold_ug:
            self.on_pan = None
            self._go(Phase.IDLE)
            then = "Place the next stone."
        else:
            self._go(Phase.AWAIT_REMOVAL)
            if self.on_pan is not None:
                then = f"The stone on the pan is already recorded as #{self.on_pan}: remove it."
            else:
                then = "The stone on the pan was NOT recorded: remove it, then place it again."
        self.emit(ev.DeviceRecovered(f"{self.scale.name} is back (serial {ident.serial}). {then}",
                                     self.scale.name, ident.serial))

    def _go(self, phase: Phase) -> None:
        self.phase = phase

