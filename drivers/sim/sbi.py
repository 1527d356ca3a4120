"""A Sartorius balance in SBI mode on a pty (or TCP), with the shared scale physics.

It answers ``ESC P`` with a 16- or 22-character print line (the unit only
once the pan has settled), executes ``ESC V``/``ESC U``/``ESC T``/``ESC S``
silently, and ``ESC x1_``/``x2_``/``x3_`` with one text line. Commands may end
in CR LF or not. On a pty it checks the client's framing (``framing.py``):
a client at the wrong baud rate gets no answer, as from a real balance.
"""

from __future__ import annotations

import time
from decimal import ROUND_HALF_EVEN, Decimal

from drivers.sbi_format import UNIT_UG, format_line, format_special
from drivers.sim.framing import Framing, PtyLine
from drivers.sim.faults import LineFaults
from drivers.sim.port import SimPort
from drivers.sim.scale_physics import CAPACITY_UG, ScalePhysics, ScaleSimulator, round_to

__all__ = ["SbiSimulator", "SARTORIUS_DEFAULT", "print_number"]

ESC = 0x1B
SARTORIUS_DEFAULT = Framing(1200, 7, "O", 1, rtscts=True)
# Units the balance can be set to that the driver refuses, in µg per unit.
FOREIGN_UG = {"oz": Decimal("28349523.125"), "ozt": Decimal("31103476.8"), "dwt": Decimal("1555173.84"),
              "GN": Decimal("64798.91"), "lb": Decimal("453592370")}
_MAX_CMD = 20  # "up to 20 characters" per the SBI description


def print_number(value_ug: int, readability_ug: int, unit: str) -> tuple[str, str]:
    """(sign, digits) as the balance prints ``value_ug`` in ``unit``."""
    if unit in UNIT_UG:
        per_unit = Decimal(UNIT_UG[unit])
        step = (Decimal(readability_ug) / per_unit).normalize()
        decimals = max(0, -step.as_tuple().exponent)
    else:  # no exact grid in a foreign unit; the driver refuses these lines anyway
        per_unit, decimals = FOREIGN_UG[unit], 4
    value = (Decimal(round_to(value_ug, readability_ug)) / per_unit).quantize(
        Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    return ("-" if value < 0 else "+"), format(abs(value), "f")


class SbiSimulator(ScaleSimulator):
    def __init__(
        self,
        *,
        model: str = "BCE224I-1S",
        serial: str = "0034309393",
        software: str = "00-20-06.51",
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
        long_format: bool = False,
        framing: Framing = SARTORIUS_DEFAULT,
        identify: bool = True,
    ) -> None:
        self.physics = ScalePhysics(
            readability_ug=readability_ug, settle_s=settle_s, noise_ug=noise_ug,
            motion_noise_ug=motion_noise_ug, drift_ug_per_s=drift_ug_per_s,
            capacity_ug=capacity_ug, seed=seed,
        )
        self.model, self.serial, self.software = model, serial, software
        # How long a zero/tare waits for stability before the balance drops it.
        self.stable_timeout_s = stable_timeout_s
        self.framing, self.identify = framing, identify
        self.set_unit(unit)
        self.long_format = long_format
        self.link_path = link_path
        self.last_mismatch: str | None = None
        self.faults = LineFaults(seed=seed)
        self._rx = bytearray()
        self._line = PtyLine()
        self._pending: tuple[bytes, float] | None = None
        self._tared = False
        self._init_wire(SimPort(on_bytes=self._receive, on_plug=self._plugged,
                                link_path=link_path, tcp=tcp, name="sbi-sim"))

    # -- settings and fault switches (any thread) -----------------------------

    def set_unit(self, unit: str) -> None:
        if unit not in UNIT_UG and unit not in FOREIGN_UG:
            raise ValueError(f"unknown unit {unit!r}; use one of {sorted({*UNIT_UG, *FOREIGN_UG})}")
        self.unit = unit

    def inject(self, kind: str, seconds: float | None = None) -> None:
        self.faults.inject(kind, seconds)

    def clear_faults(self) -> None:
        self.faults.clear()

    def status(self) -> dict:
        return {**super().status(), "unit": self.unit, "format": 22 if self.long_format else 16,
                "framing": self.framing.describe()}

    # -- wire (service thread) -------------------------------------------------

    def _plugged(self) -> None:
        self._rx.clear()
        fd = self._wire.tty_fd
        if fd is not None:
            self._line.plugged(fd)

    def _send(self, data: bytes) -> None:
        fault = self.faults.take()
        if fault == "garbage":
            data = self.faults.garbage(seven_bit=self.framing.bytesize == 7) + b"\r\n"
        elif fault == "partial":
            data = data[: max(1, (len(data) - 2) // 2)]
        if self.framing.bytesize == 7:
            data = bytes(b & 0x7F for b in data)
        self._wire.write(data)

    def _receive(self, chunk: bytes) -> None:
        fd = self._wire.tty_fd
        if fd is not None:
            self.last_mismatch = self.framing.mismatch(self._line.read(fd))
            if self.last_mismatch:
                self._rx.clear()  # at the wrong baud rate a UART hears only noise
                return
        if self.faults.muted:
            return
        self._rx += chunk
        for cmd in self._commands():
            self._execute(cmd)

    def _commands(self) -> list[bytes]:
        """Complete commands in the buffer: ``ESC`` + an upper-case letter, or
        ``ESC`` + lower-case letter, digits and ``_``. Other bytes (CR LF,
        noise) are dropped; an incomplete command waits for more bytes."""
        out: list[bytes] = []
        buf = self._rx
        while buf:
            start = buf.find(ESC)
            if start < 0:
                buf.clear()
                break
            del buf[:start]
            if len(buf) < 2:
                break
            first = buf[1]
            if 0x41 <= first <= 0x5A:
                out.append(bytes(buf[1:2]))
                del buf[:2]
            elif 0x61 <= first <= 0x7A:
                end = buf.find(b"_", 1, _MAX_CMD + 1)
                if end < 0:
                    if len(buf) > _MAX_CMD or ESC in buf[1:]:
                        del buf[:1]  # never terminated: noise
                        continue
                    break
                out.append(bytes(buf[1:end + 1]))
                del buf[:end + 1]
            else:
                del buf[:1]
        return out

    def _execute(self, cmd: bytes) -> None:
        self._settle_pending()
        if cmd == b"P":
            return self._send(self._print_line())
        if cmd in (b"V", b"U", b"T"):
            self._pending = (cmd, time.monotonic() + self.stable_timeout_s)
            return self._settle_pending()
        if cmd == b"S":  # restart: zero at power-up, tare cleared
            self._pending, self._tared = None, False
            return self.physics.zero()
        info = {b"x1_": self.model, b"x2_": self.serial, b"x3_": self.software}.get(cmd)
        if info is not None and self.identify:
            self._send(info.encode("ascii") + b"\r\n")
        # anything else: a real balance ignores commands it does not have

    def _settle_pending(self) -> None:
        """Zero and tare wait for a stable pan, as the keys do; dropped at the timeout."""
        if self._pending is None:
            return
        cmd, deadline = self._pending
        if not self.physics.settled():
            if time.monotonic() > deadline:
                self._pending = None
            return
        self._pending = None
        # The zero range is counted from the power-up zero (an empty pan).
        in_zero_range = abs(self.physics.gross()) <= self.physics.capacity_ug // 50
        if cmd == b"V" or (cmd == b"T" and in_zero_range):
            if in_zero_range:
                self.physics.zero()
                self._tared = False
        else:
            self.physics.tare()
            self._tared = True

    def _print_line(self) -> bytes:
        ident = ("N" if self._tared else "G") if self.long_format else None
        out = self.physics.range_state()
        if out:
            return format_special("H" if out == "+" else "L", "Stat" if ident else None)
        value, stable = self.physics.reading()
        sign, number = print_number(value, self.readability_ug, self.unit)
        try:
            return format_line(sign, number, self.unit if stable else None, ident)
        except ValueError:  # more digits than the display has
            return format_special("H", "Stat" if ident else None)
