"""A spectrometer Modbus front-end (Modbus TCP, RTU frames over TCP, or RTU on a
pty) by the register map in ``drivers/spectro_modbus.py`` / docs/DEVICES.md.

It sits on the same wire as the Modbus scale simulator
(``drivers/sim/modbus_wire.py``: a real pymodbus server behind a SimPort), so
it has the same unplug/replug and the same faults: ``crc``, ``noreply``,
``exception`` (the next request answers exception 4) and ``timeout S``.

The simulator owns the register bank; the wire's access hook serves reads from
it and checks writes. A trigger (``1`` to register 44) starts an acquisition
thread that really waits integration × scans (divided by ``speed``), then
writes the whole spectrum block, its sequence number and the status bits at
once under the bank lock, so a read never sees half a spectrum.
"""

from __future__ import annotations

import threading

from drivers import spectro_modbus as m
from drivers.modbus_codes import FC_WRITE_SINGLE
from drivers.sim.modbus_wire import FAULTS, ModbusWire
from drivers.sim.spectro_core import DEFAULT_COEFFS, SpectroSimulator, SpectrumSource
from drivers.spectro_serial import INTEGRATION_RANGE_US, SCANS_RANGE

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_BUSY = 1, 2, 3, 6


class ModbusSpectrometerSimulator(SpectroSimulator):
    def __init__(
        self,
        *,
        model: str = "SIM-CCD2048 MB",
        serial: str = "SPM0000001",
        pixel_count: int = 2048,
        max_counts: int = 65535,
        coefficients: tuple[float, ...] = DEFAULT_COEFFS,
        source: SpectrumSource | None = None,
        framing: str = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        link_path: str | None = None,
        unit_id: int = 1,
        speed: float = 1.0,
        seed: int = 0,
    ) -> None:
        if framing not in ("tcp", "rtu"):
            raise ValueError("framing is tcp or rtu")
        if link_path is not None and framing != "rtu":
            raise ValueError("a pty (link_path) carries RTU framing only")
        self._init_device(model=model, serial=serial, pixel_count=pixel_count, max_counts=max_counts,
                          coefficients=coefficients, source=source, seed=seed, speed=speed)
        self.framing = framing
        self._lock = threading.Lock()
        self._bank = [0] * (m.REG_SPECTRUM + pixel_count + 2)
        self._seq = 0
        self._busy = False
        self._cancel = threading.Event()
        self._power_up()
        self.unit_id = unit_id
        self._wire = ModbusWire({unit_id: len(self._bank)}, self._access, framing=framing,
                                link_path=link_path, tcp=None if link_path else (host, port),
                                name="spectro-modbus-sim")

    # -- lifecycle --------------------------------------------------------------

    @property
    def port(self) -> str:
        return self._wire.path

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the TCP listener (not for a pty)."""
        host, _, port = self.port.partition("://")[2].rpartition(":")
        return host, int(port)

    @property
    def plugged(self) -> bool:
        return self._wire.plugged

    @property
    def wire(self) -> ModbusWire:
        return self._wire

    def start(self) -> ModbusSpectrometerSimulator:
        self._wire.start()
        return self

    def stop(self) -> None:
        self.stop_control()
        self._cancel.set()
        self._wire.stop()

    def __enter__(self) -> ModbusSpectrometerSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        self._cancel.set()
        self._wire.unplug()

    def replug(self) -> None:
        self._power_up()  # a power cycle: settings back to their defaults
        self._wire.replug()

    # -- faults -------------------------------------------------------------------

    def inject(self, kind: str, seconds: float | None = None) -> None:
        if kind not in FAULTS:
            raise ValueError(f"the Modbus front-end offers fault {', '.join(FAULTS[:-1])} or timeout S "
                             "(garbage and partial frames are the serial simulator's)")
        self._wire.inject(kind, seconds)

    def clear_faults(self) -> None:
        self._wire.clear_faults()
        self.clear_scene_faults()

    # -- registers ------------------------------------------------------------------

    def _power_up(self) -> None:
        self._cancel.set()
        self._cancel = threading.Event()
        with self._lock:
            self.integration_us, self.scans, self.lamp_on = 100_000, 1, False
            self._busy = False
            b = self._bank
            b[m.REG_MAGIC], b[m.REG_VERSION] = m.MAGIC, m.MAP_VERSION
            b[m.REG_PIXELS], b[m.REG_MAX_COUNTS] = self.pixel_count, self.max_counts
            b[m.REG_MODEL:m.REG_MODEL + m.TEXT_REGS] = m.text_to_regs(self.model)
            b[m.REG_SERIAL:m.REG_SERIAL + m.TEXT_REGS] = m.text_to_regs(self.serial)
            b[m.REG_COEFFS:m.REG_COEFFS + 8] = m.floats_to_regs(self.coefficients[:4])
            b[m.REG_STATUS] = 0
            self._sync_settings()

    def _sync_settings(self) -> None:
        b = self._bank
        b[m.REG_INTEGRATION], b[m.REG_INTEGRATION + 1] = self.integration_us >> 16, self.integration_us & 0xFFFF
        b[m.REG_SCANS], b[m.REG_LAMP], b[m.REG_COMMAND] = self.scans, int(self.lamp_on), 0
        b[m.REG_STATUS] = (b[m.REG_STATUS] & ~m.ST_LAMP) | (m.ST_LAMP if self.lamp_on else 0)

    def bank(self) -> tuple[int, object]:
        """(bank size, access hook), to put this front-end on another simulator's
        bus: ``ModbusScaleSimulator(extra_units={2: spectro.bank()})``."""
        return len(self._bank), self._access

    def _access(self, unit, fc, address, count, registers, written):
        """The wire's hook (server thread): serve reads from the bank, check writes."""
        with self._lock:
            if written is None:
                registers[address:address + count] = self._bank[address:address + count]
                return None
            return self._write(fc, address, written)

    def _write(self, fc: int, address: int, values: list[int]) -> int | None:
        end = address + len(values)
        if address < m.REG_INTEGRATION or end > m.REG_COMMAND + 1:
            return ILLEGAL_ADDRESS  # identity, status and spectrum are read-only
        new = dict(zip(range(address, end), values))
        if (m.REG_INTEGRATION in new) != (m.REG_INTEGRATION + 1 in new):
            return ILLEGAL_FUNCTION if fc == FC_WRITE_SINGLE else ILLEGAL_VALUE  # half a u32
        us = (new[m.REG_INTEGRATION] << 16 | new[m.REG_INTEGRATION + 1]) if m.REG_INTEGRATION in new \
            else self.integration_us
        scans = new.get(m.REG_SCANS, self.scans)
        lamp = new.get(m.REG_LAMP, int(self.lamp_on))
        command = new.get(m.REG_COMMAND, 0)
        if not (INTEGRATION_RANGE_US[0] <= us <= INTEGRATION_RANGE_US[1]
                and SCANS_RANGE[0] <= scans <= SCANS_RANGE[1] and lamp in (0, 1) and command in (0, 1)):
            return ILLEGAL_VALUE
        if self._busy:
            return DEVICE_BUSY  # settings stay fixed while a spectrum is being taken
        self.integration_us, self.scans, self.lamp_on = us, scans, bool(lamp)
        self._sync_settings()
        if command == m.CMD_ACQUIRE:
            self._busy = True
            b = self._bank
            b[m.REG_STATUS] = (b[m.REG_STATUS] | m.ST_BUSY) & ~(m.ST_READY | m.ST_ERROR)
            threading.Thread(target=self._acquire, args=(self._cancel,), daemon=True,
                             name="spectro-mb-acquire").start()
        return None

    def _acquire(self, cancel: threading.Event) -> None:
        if cancel.wait(self.exposure_s()):
            return
        counts, saturated = self.expose()
        with self._lock:
            if cancel.is_set():
                return
            self._seq = (self._seq + 1) & 0xFFFF
            b = self._bank
            b[m.REG_SPECTRUM] = b[m.REG_SPECTRUM + self.pixel_count + 1] = self._seq
            b[m.REG_SPECTRUM + 1:m.REG_SPECTRUM + 1 + self.pixel_count] = counts.tolist()
            b[m.REG_SEQ] = self._seq
            b[m.REG_LAST_INTEGRATION] = self.integration_us >> 16
            b[m.REG_LAST_INTEGRATION + 1] = self.integration_us & 0xFFFF
            b[m.REG_LAST_SCANS] = self.scans
            status = b[m.REG_STATUS] & ~(m.ST_BUSY | m.ST_SATURATED)
            b[m.REG_STATUS] = status | m.ST_READY | (m.ST_SATURATED if saturated else 0)
            self._busy = False

    def status(self) -> dict:
        out = super().status()
        with self._lock:
            out.update(framing=self.framing, sequence=self._seq, busy=self._busy)
        return out
