"""An MT-SICS balance on a pty (or TCP) with settling physics and fault switches.

The transport is a :class:`~drivers.sim.port.SimPort`. Its one service thread
owns every read, write, unplug and replug, so closing a descriptor can never
race a ``select`` on it; commands are handled on that thread too. Other
threads (tests, the control server) only change physics state under a lock
or, for unplug/replug, post actions to that thread.
"""

from __future__ import annotations

import math
import random
import threading
import time
from decimal import Decimal

from drivers.sim import control
from drivers.sim.port import SimPort

CAPACITY_UG = 220_000_000


def round_to(value_ug: int, step_ug: int) -> int:
    q, rem = divmod(value_ug, step_ug)
    return (q + (2 * rem >= step_ug)) * step_ug


def format_value(value_ug: int, readability_ug: int = 100) -> str:
    """Grams, right-aligned in 10 chars, with as many decimals as the readability."""
    decimals = max(0, 6 - round(math.log10(readability_ug)))
    grams = Decimal(round_to(value_ug, readability_ug)).scaleb(-6)
    return format(grams.quantize(Decimal(1).scaleb(-decimals)), "f").rjust(10)


def weight_line(cmd: str, stable: bool, value_ug: int, readability_ug: int = 100) -> str:
    return f"{cmd} {'S' if stable else 'D'} {format_value(value_ug, readability_ug)} g"


class MtSicsSimulator:
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
    ) -> None:
        if readability_ug < 1 or 10 ** round(math.log10(readability_ug)) != readability_ug:
            raise ValueError("readability_ug must be a power of ten")
        self.model, self.serial = model, serial
        self.readability_ug, self.settle_s = readability_ug, settle_s
        self.motion_noise_ug, self.capacity_ug = motion_noise_ug, capacity_ug
        # How long S / Z wait for stability before answering "I", like the
        # balance's own stability timeout.
        self.stable_timeout_s = stable_timeout_s
        self.link_path = link_path
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        now = time.monotonic()
        self._mass_ug, self._zero_ug, self._noise_ug = 0, 0, noise_ug
        self._changed = now - settle_s  # powered up long ago: stable
        self._drift_rate, self._drift_acc, self._drift_t0 = drift_ug_per_s, 0.0, now
        self._next_fault: str | None = None
        self._mute_until = 0.0
        self._wire = SimPort(self._handle, on_plug=self._power_up_line,
                             link_path=link_path, tcp=tcp, name="mtsics-sim")
        self._control: control.ControlServer | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> str:
        return self._wire.path

    @property
    def plugged(self) -> bool:
        return self._wire.plugged

    def start(self) -> MtSicsSimulator:
        self._wire.start()
        return self

    def stop(self) -> None:
        self.stop_control()
        self._wire.stop()

    def __enter__(self) -> MtSicsSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- physics and fault switches (any thread) -----------------------------

    def place(self, mass_ug: int) -> None:
        """Put a load of ``mass_ug`` on the pan (negative: pan lifted)."""
        with self._lock:
            self._mass_ug = int(mass_ug)
            self._changed = time.monotonic()

    def remove(self) -> None:
        self.place(0)

    def set_noise(self, ug: int) -> None:
        with self._lock:
            self._noise_ug = int(ug)

    def set_drift(self, ug_per_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._drift_acc += self._drift_rate * (now - self._drift_t0)
            self._drift_rate, self._drift_t0 = float(ug_per_s), now

    def inject(self, kind: str, seconds: float | None = None) -> None:
        with self._lock:
            if kind in ("garbage", "partial"):
                self._next_fault = kind
            elif kind == "timeout":
                if seconds is None or seconds < 0:
                    raise ValueError("fault timeout needs a duration in seconds")
                self._mute_until = time.monotonic() + seconds
            else:
                raise ValueError(f"unknown fault {kind!r}; use garbage, partial or timeout")

    def clear_faults(self) -> None:
        with self._lock:
            self._next_fault, self._mute_until = None, 0.0

    def unplug(self) -> None:
        self._wire.unplug()

    def replug(self) -> None:
        self._wire.replug()

    def reading(self) -> tuple[int, bool]:
        """The display right now: (net µg rounded to readability, stable)."""
        with self._lock:
            now = time.monotonic()
            stable = now - self._changed >= self.settle_s
            spread = self._noise_ug if stable else self.motion_noise_ug
            noise = self._rng.randint(-spread, spread) if spread > 0 else 0
            net = self._gross(now) - self._zero_ug + noise
            return round_to(net, self.readability_ug), stable

    def status(self) -> dict:
        value, stable = self.reading()
        with self._lock:
            return {
                "port": self.port,
                "mass_ug": self._mass_ug,
                "reading_ug": value,
                "stable": stable,
                "serial": self.serial,
                "plugged": self.plugged,
            }

    def _gross(self, now: float) -> int:
        return self._mass_ug + round(self._drift_acc + self._drift_rate * (now - self._drift_t0))

    def _range(self) -> str | None:
        with self._lock:
            gross = self._gross(time.monotonic())
        if gross > self.capacity_ug:
            return "+"
        if gross < -self.capacity_ug // 100:
            return "-"
        return None

    # -- protocol (service thread) ------------------------------------------

    def _power_up_line(self) -> None:
        self._wire.write(f'I4 A "{self.serial}"\r\n'.encode())

    def _send(self, text: str) -> None:
        data = f"{text}\r\n".encode("ascii")
        with self._lock:
            fault, self._next_fault = self._next_fault, None
        if fault == "garbage":
            # Bytes >= 0x80 never form a valid line and never contain CR LF.
            n = self._rng.randint(4, 16)
            data = bytes(self._rng.randrange(0x80, 0x100) for _ in range(n)) + b"\r\n"
        elif fault == "partial":
            data = data[: max(1, len(text) // 2)]
        self._wire.write(data)

    def _handle(self, line: bytes) -> None:
        cmd = line.decode("ascii", "replace").strip()
        with self._lock:
            muted = time.monotonic() < self._mute_until
        if muted or not cmd:
            return
        if cmd in ("@", "I4"):
            return self._send(f'I4 A "{self.serial}"')
        if cmd == "I2":
            return self._send(f'I2 A "{self.model}"')
        if cmd not in ("S", "SI", "Z"):
            return self._send("ES")
        out = self._range()
        settled = True if cmd == "SI" or out else self._wait_stable()
        if settled is None:
            return  # cancelled by the next command
        if out or not settled:
            return self._send(f"{cmd[0]} {out or 'I'}")
        if cmd == "Z":
            with self._lock:
                self._zero_ug = self._gross(time.monotonic())
            return self._send("Z A")
        value, stable = self.reading()
        self._send(weight_line("S", stable, value, self.readability_ug))

    def _wait_stable(self) -> bool | None:
        """True once settled, False at the stability timeout, None if cancelled.

        A real balance drops a pending S when a new command (e.g. ``@``)
        arrives; we do the same so a client's resync is answered at once.
        """
        deadline = time.monotonic() + self.stable_timeout_s
        while True:
            with self._lock:
                if time.monotonic() - self._changed >= self.settle_s:
                    return True
            if time.monotonic() >= deadline:
                return False
            if not self._wire.idle(0.02):
                return None

    # -- control interface (drivers/sim/control.py) -----------------------

    def control(self, line: str) -> dict:
        """Run one control command (``place 99800``, ``fault timeout 2`` ...)."""
        return control.run_command(self, line)

    def start_control(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._control = control.ControlServer(self, host, port)
        return self._control.address

    def stop_control(self) -> None:
        server, self._control = self._control, None
        if server is not None:
            server.stop()
