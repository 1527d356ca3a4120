"""An MT-SICS balance on a pty (or TCP) with settling physics and fault switches.

The transport is a :class:`~drivers.sim.port.SimPort`. Its one service thread
owns every read, write, unplug and replug, so closing a descriptor can never
race a ``select`` on it; commands are handled on that thread too. The pan
itself (settling, noise, drift, zero) is :class:`~drivers.sim.scale_physics.ScalePhysics`,
shared with the other scale simulators.
"""

from __future__ import annotations

import math
import time
from decimal import Decimal

from drivers.sim.faults import LineFaults
from drivers.sim.port import SimPort
from drivers.sim.scale_physics import CAPACITY_UG, ScalePhysics, ScaleSimulator, round_to

__all__ = ["MtSicsSimulator", "format_value", "weight_line", "round_to", "CAPACITY_UG"]


def format_value(value_ug: int, readability_ug: int = 100) -> str:
    """Grams, right-aligned in 10 chars, with as many decimals as the readability."""
    decimals = max(0, 6 - round(math.log10(readability_ug)))
    grams = Decimal(round_to(value_ug, readability_ug)).scaleb(-6)
    return format(grams.quantize(Decimal(1).scaleb(-decimals)), "f").rjust(10)


def weight_line(cmd: str, stable: bool, value_ug: int, readability_ug: int = 100) -> str:
    return f"{cmd} {'S' if stable else 'D'} {format_value(value_ug, readability_ug)} g"


class MtSicsSimulator(ScaleSimulator):
    def __init__(
        self,
        *,
        model: str = "XS205DU Excellence 220.0090 g",
        serial: str = "SIM0000001",
        readability_ug: int = 100,
        settle_s: float = 0.5,
        noise_ug: int = 0,
        motion_noise_ug: int = 2000,
        drift_ug_per_s: float = 0,
        link_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        capacity_ug: int = CAPACITY_UG,
        stable_timeout_s: float = 3.0,
        seed: int | None = None,
        unit: str = "g",
    ) -> None:
        self.physics = ScalePhysics(
            readability_ug=readability_ug, settle_s=settle_s, noise_ug=noise_ug,
            motion_noise_ug=motion_noise_ug, drift_ug_per_s=drift_ug_per_s,
            capacity_ug=capacity_ug, seed=seed,
        )
        self.model, self.serial = model, serial
        # How long S / Z wait for stability before answering "I", like the
        # balance's own stability timeout.
        self.stable_timeout_s = stable_timeout_s
        self.link_path = link_path
        # The unit set in the balance's menu; anything but g shows how the
        # driver handles a balance set to oz, dwt...
        self.unit = unit
        self.faults = LineFaults(seed=seed)
        self._init_wire(SimPort(self._handle, on_plug=self._power_up_line,
                                link_path=link_path, tcp=tcp, name="mtsics-sim"))

    # -- fault switches (any thread) -----------------------------------------

    def inject(self, kind: str, seconds: float | None = None) -> None:
        self.faults.inject(kind, seconds)

    def clear_faults(self) -> None:
        self.faults.clear()

    # -- protocol (service thread) ------------------------------------------

    def _power_up_line(self) -> None:
        self._wire.write(f'I4 A "{self.serial}"\r\n'.encode())

    def _send(self, text: str) -> None:
        data = f"{text}\r\n".encode("ascii")
        fault = self.faults.take()
        if fault == "garbage":
            data = self.faults.garbage() + b"\r\n"
        elif fault == "partial":
            data = data[: max(1, len(text) // 2)]
        self._wire.write(data)

    def _handle(self, line: bytes) -> None:
        cmd = line.decode("ascii", "replace").strip()
        if self.faults.muted or not cmd:
            return
        if cmd in ("@", "I4"):
            return self._send(f'I4 A "{self.serial}"')
        if cmd == "I2":
            return self._send(f'I2 A "{self.model}"')
        if cmd not in ("S", "SI", "Z"):
            return self._send("ES")
        out = self.physics.range_state()
        settled = True if cmd == "SI" or out else self._wait_stable()
        if settled is None:
            return  # cancelled by the next command
        if out or not settled:
            return self._send(f"{cmd[0]} {out or 'I'}")
        if cmd == "Z":
            self.physics.zero()
            return self._send("Z A")
        value, stable = self.physics.reading()
        line = weight_line("S", stable, value, self.readability_ug)
        if self.unit != "g":
            line = line[: -len(" g")] + f" {self.unit}"
        self._send(line)

    def _wait_stable(self) -> bool | None:
        """True once settled, False at the stability timeout, None if cancelled.

        A real balance drops a pending S when a new command (e.g. ``@``)
        arrives; we do the same so a client's resync is answered at once.
        """
        deadline = time.monotonic() + self.stable_timeout_s
        while True:
            if self.physics.settled():
                return True
            if time.monotonic() >= deadline:
                return False
            if not self._wire.idle(0.02):
                return None
