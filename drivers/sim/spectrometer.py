"""A serial CCD spectrometer on a pty (or TCP): the command subset of
docs/DEVICES.md ("Spectrometer (serial)"), a pluggable spectrum source, and
fault switches.

Commands are handled on the SimPort's service thread. ``S`` really waits the
integration time × scans (divided by ``speed``) while the port stays serviced;
a new command arriving meanwhile abandons the acquisition, as a resync needs.
"""

from __future__ import annotations

import re
import time

from drivers import spectro_frames as wire
from drivers.sim.faults import LineFaults
from drivers.sim.port import SimPort
from drivers.sim.spectro_core import DEFAULT_COEFFS, SpectroSimulator, SpectrumSource
from drivers.spectro_serial import (INTEGRATION_RANGE_US, SCANS_RANGE, SLOT_COEFFS, SLOT_MAX_COUNTS,
                                    SLOT_MODEL, SLOT_PIXELS, SLOT_SERIAL)

_SET = re.compile(r"([IAJP])(\d{1,9})")
_FAULTS = ("garbage", "partial", "corrupt", "nak")


class SerialSpectrometerSimulator(SpectroSimulator):
    def __init__(
        self,
        *,
        model: str = "SIM-CCD2048 RS-232",
        serial: str = "SPX0000001",
        pixel_count: int = 2048,
        max_counts: int = 65535,
        coefficients: tuple[float, ...] = DEFAULT_COEFFS,
        source: SpectrumSource | None = None,
        link_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        speed: float = 1.0,
        seed: int = 0,
    ) -> None:
        self._init_device(model=model, serial=serial, pixel_count=pixel_count, max_counts=max_counts,
                          coefficients=coefficients, source=source, seed=seed, speed=speed)
        self.ascii_mode = False
        self.faults = LineFaults(_FAULTS, seed=seed, usage=f"{', '.join(_FAULTS)} or timeout S")
        self._wire = SimPort(self._handle, on_plug=self._power_up, link_path=link_path, tcp=tcp,
                             name="spectro-sim")

    # -- faults (any thread) ------------------------------------------------------

    def inject(self, kind: str, seconds: float | None = None) -> None:
        self.faults.inject(kind, seconds)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.clear_scene_faults()

    # -- protocol (service thread) ---------------------------------------------------

    def _power_up(self) -> None:
        # A power cycle restores the defaults; the driver re-sends its settings.
        self.integration_us, self.scans, self.lamp_on, self.ascii_mode = 100_000, 1, False, False

    def _send(self, data: bytes, *, block: bool = False) -> None:
        fault = self.faults.take()
        if fault == "garbage":
            data = self.faults.garbage()
        elif fault == "nak":
            data = wire.NAK
        elif fault == "partial":
            data = data[: max(1, len(data) // 2)] if block else data[:1]
        elif fault == "corrupt" and block:
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
        self._wire.write(data)

    def _ack(self, text: str | None = None) -> None:
        self._send(wire.ACK + (b"" if text is None else text.encode("ascii") + b"\r\n"))

    def _handle(self, line: bytes) -> None:
        cmd = line.decode("ascii", "replace").strip()
        if self.faults.muted or not cmd:
            return
        if cmd in ("aA", "bB"):
            self.ascii_mode = cmd == "aA"
            return self._ack()
        if cmd == "S":
            return self._acquire()
        if cmd.startswith("?"):
            return self._query(cmd[1:])
        m = _SET.fullmatch(cmd)
        if m is None or not self._set(m[1], int(m[2])):
            return self._send(wire.NAK)
        self._ack()

    def _set(self, letter: str, value: int) -> bool:
        if letter == "I" and INTEGRATION_RANGE_US[0] <= value <= INTEGRATION_RANGE_US[1]:
            self.integration_us = value
        elif letter == "A" and SCANS_RANGE[0] <= value <= SCANS_RANGE[1]:
            self.scans = value
        elif letter == "J" and value in (0, 1):
            self.lamp_on = value == 1
        elif letter == "P" and value == 0:
            pass  # pixel mode 0 (every pixel) is the only one offered
        else:
            return False
        return True

    def _query(self, what: str) -> None:
        slots = {SLOT_SERIAL: self.serial, SLOT_MODEL: self.model, SLOT_PIXELS: str(self.pixel_count),
                 SLOT_MAX_COUNTS: str(self.max_counts)}
        slots.update({s: repr(c) for s, c in zip(SLOT_COEFFS, self.coefficients)})
        values = {"I": self.integration_us, "A": self.scans, "J": int(self.lamp_on)}
        if what in values:
            return self._ack(str(values[what]))
        if what.startswith("x") and what[1:].isdigit() and int(what[1:]) in slots:
            return self._ack(slots[int(what[1:])])
        self._send(wire.NAK)

    def _acquire(self) -> None:
        deadline = time.monotonic() + self.exposure_s()
        while (left := deadline - time.monotonic()) > 0:
            if not self._wire.idle(min(left, 0.05)):
                return  # a new command (or an unplug) abandons the scan
        counts, saturated = self.expose()
        flags = (wire.FLAG_SATURATED if saturated else 0) | (wire.FLAG_LAMP if self.lamp_on else 0)
        header = wire.FrameHeader(self.pixel_count, self.scans, self.integration_us, flags)
        encode = wire.encode_ascii if self.ascii_mode else wire.encode_binary
        self._send(encode(header, counts), block=True)
