"""What every simulated scale shares, whatever its wire protocol: a pan with
settling, noise, drift, zero/tare and capacity, plus the control words that
reach it (the lifecycle and control port are ``drivers/sim/lifecycle.py``).

Protocol simulators (MT-SICS, Sartorius SBI, Modbus transmitters) subclass
:class:`ScaleSimulator`, own a :class:`~drivers.sim.port.SimPort` as
``self._wire`` and answer commands from :meth:`reading` and :meth:`range_state`.
The control server (``drivers/sim/control.py``) calls the public methods here.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

from drivers.sim.lifecycle import SimulatedDevice

CAPACITY_UG = 220_000_000


def round_to(value_ug: int, step_ug: int) -> int:
    q, rem = divmod(value_ug, step_ug)
    return (q + (2 * rem >= step_ug)) * step_ug


class ScalePhysics:
    """A pan's state. Thread-safe; ``clock`` is injectable for tests."""

    def __init__(
        self,
        *,
        readability_ug: int = 100,
        settle_s: float = 0.5,
        noise_ug: int = 0,
        motion_noise_ug: int = 2000,
        drift_ug_per_s: float = 0,
        capacity_ug: int = CAPACITY_UG,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if readability_ug < 1 or 10 ** round(math.log10(readability_ug)) != readability_ug:
            raise ValueError("readability_ug must be a power of ten")
        self.readability_ug, self.settle_s = readability_ug, settle_s
        self.motion_noise_ug, self.capacity_ug = motion_noise_ug, capacity_ug
        self.clock = clock
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        now = clock()
        self._mass_ug, self._zero_ug, self._tare_ug, self._noise_ug = 0, 0, 0, noise_ug
        self._changed = now - settle_s  # powered up long ago: stable
        self._drift_rate, self._drift_acc, self._drift_t0 = drift_ug_per_s, 0.0, now

    def place(self, mass_ug: int) -> None:
        """Put a load of ``mass_ug`` on the pan (negative: pan lifted)."""
        with self._lock:
            self._mass_ug = int(mass_ug)
            self._changed = self.clock()

    def set_noise(self, ug: int) -> None:
        with self._lock:
            self._noise_ug = int(ug)

    def set_drift(self, ug_per_s: float) -> None:
        with self._lock:
            now = self.clock()
            self._drift_acc += self._drift_rate * (now - self._drift_t0)
            self._drift_rate, self._drift_t0 = float(ug_per_s), now

    @property
    def mass_ug(self) -> int:
        with self._lock:
            return self._mass_ug

    def settled(self) -> bool:
        with self._lock:
            return self.clock() - self._changed >= self.settle_s

    def gross(self) -> int:
        with self._lock:
            now = self.clock()
            return self._mass_ug + round(self._drift_acc + self._drift_rate * (now - self._drift_t0))

    def zero(self) -> None:
        with self._lock:
            self._zero_ug, self._tare_ug = self.gross(), 0

    def tare(self) -> int:
        """Tare the current load; returns the tare weight (µg, rounded to readability)."""
        with self._lock:
            self._tare_ug = self.gross() - self._zero_ug
            return round_to(self._tare_ug, self.readability_ug)

    def reading(self) -> tuple[int, bool]:
        """The display right now: (net µg rounded to readability, stable)."""
        with self._lock:
            stable = self.settled()
            spread = self._noise_ug if stable else self.motion_noise_ug
            noise = self._rng.randint(-spread, spread) if spread > 0 else 0
            net = self.gross() - self._zero_ug - self._tare_ug + noise
            return round_to(net, self.readability_ug), stable

    def range_state(self) -> str | None:
        """"+" over capacity, "-" under the zero range (pan lifted), else None."""
        gross = self.gross()
        if gross > self.capacity_ug:
            return "+"
        if gross < -self.capacity_ug // 100:
            return "-"
        return None


class ScaleSimulator(SimulatedDevice):
    """Control-facing half of a simulated scale; subclasses add the protocol.

    Subclasses set ``self.physics``, ``self.serial`` and ``self._wire`` (a
    SimPort) and implement ``inject``/``clear_faults`` for their own faults.
    """

    physics: ScalePhysics
    serial: str

    def _init_wire(self, wire) -> None:
        self._wire = wire

    # -- physics (any thread) ----------------------------------------------

    @property
    def settle_s(self) -> float:
        return self.physics.settle_s

    @settle_s.setter
    def settle_s(self, seconds: float) -> None:
        self.physics.settle_s = seconds

    @property
    def readability_ug(self) -> int:
        return self.physics.readability_ug

    def place(self, mass_ug: int) -> None:
        self.physics.place(mass_ug)

    def remove(self) -> None:
        self.physics.place(0)

    def set_noise(self, ug: int) -> None:
        self.physics.set_noise(ug)

    def set_drift(self, ug_per_s: float) -> None:
        self.physics.set_drift(ug_per_s)

    def reading(self) -> tuple[int, bool]:
        return self.physics.reading()

    def set_unit(self, unit: str) -> None:
        """The weighing unit set in the balance's menu (g, ct, oz ...)."""
        self.unit = unit

    def status(self) -> dict:
        value, stable = self.physics.reading()
        return {
            "port": self.port,
            "mass_ug": self.physics.mass_ug,
            "reading_ug": value,
            "stable": stable,
            "serial": self.serial,
            "plugged": self.plugged,
        }
