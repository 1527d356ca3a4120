"""A spectrometer behind a Modbus front-end (RTU or TCP), by the register map in
docs/DEVICES.md ("Spectrometer (Modbus front-end)").

No common spectrometer publishes spectra as Modbus registers, so the map is
ours: identity and status at 0.., settings at 40.., the spectrum at 100..
framed by a sequence number at both ends, read in chunks of at most 125
registers (the FC03/FC04 limit; 2048 pixels = 17 reads).

The link is a :class:`drivers.modbus_link.ModbusLink` (possibly shared with
other devices on the same RS-485 bus): every request names the unit id, and
the driver counts as one user of the link between ``identify`` and ``close``.
"""

from __future__ import annotations

import struct
import time
from typing import Protocol

import numpy as np

from drivers.errors import DeviceRefused, LinkError, ProtocolError
from drivers.kinds import Identity
from drivers.modbus_codes import ModbusExceptionReply
from drivers.spectro_frames import FLAG_LAMP, FLAG_SATURATED, Frame, FrameHeader
from drivers.spectro_serial import INTEGRATION_RANGE_US, SCANS_RANGE

# -- register map (protocol addresses, 0-based; FC03 and FC04 read the same space) --
MAGIC = 0x5350  # "SP"
MAP_VERSION = 1
REG_MAGIC, REG_VERSION, REG_STATUS, REG_SEQ, REG_PIXELS, REG_MAX_COUNTS = 0, 1, 2, 3, 4, 5
REG_MODEL, REG_SERIAL, TEXT_REGS = 6, 14, 8  # 16 ASCII chars each, high byte first
REG_COEFFS = 22  # c0..c3 as float32, high word first: 22-29
REG_LAST_INTEGRATION, REG_LAST_SCANS = 30, 32  # u32 at 30-31, u16 at 32
INFO_COUNT = 33
REG_INTEGRATION, REG_SCANS, REG_LAMP, REG_COMMAND = 40, 42, 43, 44  # integration: u32 at 40-41
CMD_ACQUIRE = 1
REG_SPECTRUM = 100  # sequence number, then one register per pixel, then the sequence number again
MAX_READ = 125

ST_READY, ST_BUSY, ST_SATURATED, ST_LAMP, ST_ERROR = 0x01, 0x02, 0x04, 0x08, 0x10

FIX_MAP = "check that the device at this address is the spectrometer front-end (register map v1)"
ILLEGAL_VALUE = 3
_FIX_INTEGRATION = f"use {INTEGRATION_RANGE_US[0]:,} µs to {INTEGRATION_RANGE_US[1]:,} µs"
_FIX_SCANS = f"use {SCANS_RANGE[0]} to {SCANS_RANGE[1]:,} scans"
_POLL_S = 0.01
_EXPOSURE_MARGIN = 1.25


class RegisterLink(Protocol):
    """What the driver needs of ``drivers.modbus_link.ModbusLink``."""

    url: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def reopen(self) -> None: ...
    def read_input(self, unit: int, address: int, count: int) -> list[int]: ...
    def read_holding(self, unit: int, address: int, count: int) -> list[int]: ...
    def write_register(self, unit: int, address: int, value: int) -> None: ...
    def write_registers(self, unit: int, address: int, values: list[int]) -> None: ...
    def transcript(self) -> list[str]: ...


def regs_to_text(regs: list[int]) -> str:
    raw = b"".join(struct.pack(">H", r) for r in regs).rstrip(b"\x00 ")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise ProtocolError(f"identity text registers hold non-ASCII bytes {raw!r}", FIX_MAP)
    return raw.decode("ascii")


def text_to_regs(text: str, n: int = TEXT_REGS) -> list[int]:
    raw = text.encode("ascii")[: 2 * n].ljust(2 * n, b"\x00")
    return list(struct.unpack(f">{n}H", raw))


def regs_to_floats(regs: list[int]) -> tuple[float, ...]:
    return struct.unpack(f">{len(regs) // 2}f", struct.pack(f">{len(regs)}H", *regs))


def floats_to_regs(values: tuple[float, ...]) -> list[int]:
    return list(struct.unpack(f">{2 * len(values)}H", struct.pack(f">{len(values)}f", *values)))


def spectrum_reads(pixels: int) -> list[tuple[int, int]]:
    """(address, count) of each read covering the framed spectrum block."""
    total = pixels + 2
    return [(REG_SPECTRUM + i, min(MAX_READ, total - i)) for i in range(0, total, MAX_READ)]


class ModbusSpectrometer:
    """Implements ``drivers.kinds.Spectrometer`` over a Modbus register link."""

    def __init__(self, link: RegisterLink, *, unit_id: int = 1, expected_serial: str | None = None,
                 serial_setting: str = "the expected serial number in the config",
                 reply_timeout: float = 1.0) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id must be 1..247, got {unit_id}")
        self.link, self.unit_id = link, unit_id
        self._holding = False  # whether this driver counts as a user of the (shared) link
        self.expected_serial, self.serial_setting = expected_serial, serial_setting
        self.reply_timeout = reply_timeout
        self.identity: Identity | None = None
        self.pixel_count = self.max_counts = 0
        self.integration_us, self.scans = 0, 1
        self.last_frame: Frame | None = None
        self._settings: dict[str, int] = {}  # re-written after a reconnect

    # -- session ---------------------------------------------------------------

    def identify(self) -> Identity:
        if not self._holding:
            self.link.open()
            self._holding = True
        try:
            return self._check_identity()
        except BaseException:
            self.close()
            raise

    def _check_identity(self) -> Identity:
        info = self._read(0, INFO_COUNT)
        if info[REG_MAGIC] != MAGIC or info[REG_VERSION] != MAP_VERSION:
            raise ProtocolError(
                f"device at {self.link.url} is not a spectrometer front-end with map v{MAP_VERSION} "
                f"(registers 0-1: 0x{info[REG_MAGIC]:04X} {info[REG_VERSION]})", FIX_MAP,
                transcript=self.link.transcript())
        model = regs_to_text(info[REG_MODEL:REG_MODEL + TEXT_REGS])
        serial = regs_to_text(info[REG_SERIAL:REG_SERIAL + TEXT_REGS])
        pixels, max_counts = info[REG_PIXELS], info[REG_MAX_COUNTS]
        want = self.expected_serial or (self.identity.serial if self.identity else None)
        if want is not None and serial != want:
            raise LinkError(
                f"a different spectrometer (serial {serial}) answers at {self.link.url}; expected {want}",
                f"plug the right spectrometer in, or update {self.serial_setting}",
                transcript=self.link.transcript())
        if pixels < 1 or max_counts < 1:
            raise ProtocolError(f"front-end reports {pixels} pixels and full scale {max_counts}",
                                FIX_MAP, transcript=self.link.transcript())
        self.pixel_count, self.max_counts = pixels, max_counts
        for name, value in self._settings.items():
            getattr(self, f"_write_{name}")(value)
        held = self.link.read_holding(self.unit_id, REG_INTEGRATION, 3)
        self.integration_us, self.scans = held[0] << 16 | held[1], held[2]
        raw = (f"FC04 0 x{INFO_COUNT}: model={model!r} serial={serial!r} pixels={pixels} "
               f"max_counts={max_counts}",)
        ident = Identity(model=model, serial=serial, raw=raw)
        if self.identity is None:
            self.identity = ident
        return ident

    def recover(self) -> Identity:
        """Reopen the bus and prove the same spectrometer answers (by serial number)."""
        if not self._holding:
            return self.identify()
        self.link.reopen()
        return self._check_identity()

    def close(self) -> None:
        if self._holding:
            self._holding = False
            self.link.close()

    def _read(self, address: int, count: int) -> list[int]:
        return self.link.read_input(self.unit_id, address, count)

    def __enter__(self) -> ModbusSpectrometer:
        self.identify()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- settings ------------------------------------------------------------------

    def set_integration_us(self, us: int) -> None:
        self._set("integration", _whole(us, "integration time"))

    def set_scans(self, n: int) -> None:
        self._set("scans", _whole(n, "scans"))

    def set_lamp(self, on: bool) -> None:
        self._set("lamp", 1 if on else 0)

    def _set(self, name: str, value: int) -> None:
        getattr(self, f"_write_{name}")(value)
        self._settings[name] = value

    def _write_integration(self, us: int) -> None:
        if not 0 <= us < 2**32:
            raise DeviceRefused(f"integration time {us} µs does not fit the 32-bit register", _FIX_INTEGRATION)
        self._write(REG_INTEGRATION, [us >> 16, us & 0xFFFF], f"integration time {us} µs", _FIX_INTEGRATION)
        self.integration_us = us

    def _write_scans(self, n: int) -> None:
        if not 0 <= n <= 0xFFFF:
            raise DeviceRefused(f"{n} scans do not fit the 16-bit register", _FIX_SCANS)
        self._write(REG_SCANS, [n], f"{n} scans", _FIX_SCANS)
        self.scans = n

    def _write_lamp(self, on: int) -> None:
        self._write(REG_LAMP, [on], f"lamp {'on' if on else 'off'}", "send 0 (off) or 1 (on)")

    def _write(self, address: int, values: list[int], setting: str, fix: str) -> None:
        """A settings write; exception 3 (illegal data value) is the device refusing the value."""
        try:
            if len(values) == 1:
                self.link.write_register(self.unit_id, address, values[0])
            else:
                self.link.write_registers(self.unit_id, address, values)
        except ModbusExceptionReply as e:
            if e.code != ILLEGAL_VALUE:
                raise
            raise DeviceRefused(f"spectrometer at {self.link.url} refused {setting} "
                                f"(Modbus exception 3, illegal data value)", fix, e.transcript) from None

    def wavelength_coefficients(self) -> tuple[float, ...]:
        return regs_to_floats(self._read(REG_COEFFS, 8))

    # -- acquisition -------------------------------------------------------------------

    def status(self) -> tuple[int, int]:
        """(status bits, sequence number of the last completed spectrum)."""
        status, seq = self._read(REG_STATUS, 2)
        return status, seq

    def acquire(self) -> np.ndarray:
        return self.acquire_frame().counts

    def acquire_frame(self) -> Frame:
        if not self.pixel_count:
            self.identify()
        _, seq0 = self.status()
        self.link.write_register(self.unit_id, REG_COMMAND, CMD_ACQUIRE)
        deadline = time.monotonic() + self.reply_timeout + \
            self.integration_us * self.scans / 1e6 * _EXPOSURE_MARGIN
        while True:
            status, seq = self.status()
            if status & ST_ERROR:
                raise DeviceRefused(f"spectrometer at {self.link.url} reports an acquisition error "
                                    f"(status 0x{status:04X})", "check its settings and power-cycle it",
                                    transcript=self.link.transcript())
            if seq != seq0 and status & ST_READY and not status & ST_BUSY:
                break
            if time.monotonic() >= deadline:
                raise ProtocolError(f"spectrometer at {self.link.url} still busy after its exposure "
                                    f"(status 0x{status:04X}, sequence {seq})",
                                    "check the integration time; power-cycle the front-end if it repeats",
                                    transcript=self.link.transcript())
            time.sleep(_POLL_S)
        counts, block_seq = self.read_spectrum()
        if block_seq != seq:
            raise ProtocolError(f"spectrum registers hold acquisition {block_seq}, status said {seq}",
                                "another master triggered an acquisition; give the station sole access",
                                transcript=self.link.transcript())
        last = self._read(REG_LAST_INTEGRATION, 3)
        flags = (FLAG_SATURATED if status & ST_SATURATED else 0) | (FLAG_LAMP if status & ST_LAMP else 0)
        header = FrameHeader(self.pixel_count, last[2], last[0] << 16 | last[1], flags)
        raw = (f"> FC06 {REG_COMMAND} <- {CMD_ACQUIRE}", f"< status 0x{status:04X} seq {seq}",
               f"< {header.describe()}, counts min {int(counts.min())} max {int(counts.max())}")
        self.last_frame = Frame(header, counts, raw)
        return self.last_frame

    def read_spectrum(self) -> tuple[np.ndarray, int]:
        """The spectrum registers in <= 125-register reads, and their sequence number.

        The front-end writes a whole spectrum at once, so the same sequence
        number at both ends proves the reads did not straddle two acquisitions.
        """
        block: list[int] = []
        for address, count in spectrum_reads(self.pixel_count):
            block += self._read(address, count)
        if block[0] != block[-1]:
            raise ProtocolError(
                f"spectrum changed while being read (sequence {block[0]} then {block[-1]})",
                "another master triggered an acquisition; give the station sole access",
                transcript=self.link.transcript())
        return np.array(block[1:-1], dtype=np.uint16), block[0]


def _whole(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return value
