"""A CCD spectrometer on RS-232: a subset of the classic Ocean Optics command set.

The exact subset, framing and block layout are in docs/DEVICES.md
("Spectrometer (serial)"); the byte layouts live in ``drivers/spectro_frames.py``.
Every command is one ASCII line (CR LF); the device answers ACK (0x06) or NAK
(0x15), queries add one ASCII line, and ``S`` answers STX and a spectrum block
(binary with a CRC, or ASCII lines for debugging with a terminal).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from drivers import spectro_frames as wire
from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.identify import check_serial
from drivers.kinds import Identity
from drivers.serial_link import SerialLink

# Configuration slots read with ``?x<n>``: 0-4 follow the Ocean Optics layout
# (serial number, wavelength coefficients c0..c3); 16-18 are this subset's own.
SLOT_SERIAL, SLOT_COEFFS, SLOT_MODEL, SLOT_PIXELS, SLOT_MAX_COUNTS = 0, (1, 2, 3, 4), 16, 17, 18
INTEGRATION_RANGE_US = (10, 65_000_000)
SCANS_RANGE = (1, 5000)
_QUIET_S = 0.05  # silence this long after a resync means the line is clean
_DRAIN_ROUNDS = 200
_EXPOSURE_MARGIN = 1.25  # the device's clock may run slow; never time out a good scan

_REFUSALS = {
    "I": ("integration time", f"use {INTEGRATION_RANGE_US[0]} µs to {INTEGRATION_RANGE_US[1]:,} µs"),
    "A": ("number of scans to average", f"use {SCANS_RANGE[0]} to {SCANS_RANGE[1]} scans"),
    "J": ("lamp setting", "use J0 or J1; check that the lamp is connected to the spectrometer"),
    "S": ("acquisition", "the spectrometer cannot acquire now; check its settings and power-cycle it"),
}


class SerialSpectrometer:
    """Implements ``drivers.kinds.Spectrometer`` over a ``SerialLink``."""

    def __init__(
        self,
        link: SerialLink,
        *,
        expected_serial: str | None = None,
        serial_setting: str = "the expected serial number in the config",
        reply_timeout: float = 1.0,
        ascii_transfer: bool = False,
    ) -> None:
        self.link = link
        self.expected_serial = expected_serial
        self.serial_setting = serial_setting
        self.reply_timeout = reply_timeout
        self.ascii_transfer = ascii_transfer
        self.identity: Identity | None = None
        self.pixel_count = 0
        self.max_counts = 0
        self.integration_us = 0
        self.scans = 1
        self.last_frame: wire.Frame | None = None
        # What the caller set, re-sent after a reconnect: a power-cycled
        # spectrometer comes back with its defaults.
        self._settings: dict[str, int] = {}
        self._dirty = False

    # -- session -------------------------------------------------------------

    def identify(self) -> Identity:
        self.link.open()
        try:
            self.resync()
            raw: list[str] = []
            model = wire.parse_text(self._query(f"?x{SLOT_MODEL}", raw), "model")
            serial = wire.parse_text(self._query(f"?x{SLOT_SERIAL}", raw), "serial number")
            pixels = wire.parse_uint(self._query(f"?x{SLOT_PIXELS}", raw), "pixel count", wire.MAX_PIXELS)
            max_counts = wire.parse_uint(self._query(f"?x{SLOT_MAX_COUNTS}", raw), "ADC full scale", 65535)
            check_serial(self, serial, device="spectrometer")
            if pixels < 1 or max_counts < 1:
                raise ProtocolError(
                    f"spectrometer reports {pixels} pixels and full scale {max_counts}",
                    "the spectrometer's configuration is damaged; have it serviced",
                    transcript=self.link.transcript(),
                )
            self.pixel_count, self.max_counts = pixels, max_counts
            for letter, value in self._settings.items():
                self._command(f"{letter}{value}")
            # The exposure sizes the acquisition timeout, so know it even if
            # nobody set it.
            self.integration_us = wire.parse_uint(self._query("?I"), "integration time")
            self.scans = wire.parse_uint(self._query("?A"), "scans to average", 65535)
        except BaseException:
            self.link.close()
            raise
        ident = Identity(model=model, serial=serial, raw=tuple(raw))
        if self.identity is None:
            self.identity = ident
        return ident

    def recover(self) -> Identity:
        """Reopen the link and prove it is the same spectrometer (by serial number)."""
        self.link.close()
        return self.identify()

    def close(self) -> None:
        self.link.close()

    def __enter__(self) -> SerialSpectrometer:
        self.identify()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resync(self) -> None:
        """Drop whatever is in flight, then set the transfer mode and wait for its ACK."""
        for _ in range(_DRAIN_ROUNDS):
            self.link.discard_input()
            try:
                self.link.read_exact(1, _QUIET_S)
            except ReplyTimeout:
                break
        self._dirty = False
        self._command("aA" if self.ascii_transfer else "bB")

    # -- settings --------------------------------------------------------------

    def set_integration_us(self, us: int) -> None:
        self._set("I", _whole(us, "integration time"))

    def set_scans(self, n: int) -> None:
        self._set("A", _whole(n, "scans"))

    def set_lamp(self, on: bool) -> None:
        self._set("J", 1 if on else 0)

    def set_ascii_transfer(self, on: bool) -> None:
        self._command("aA" if on else "bB")
        self.ascii_transfer = on

    def _set(self, letter: str, value: int) -> None:
        self._command(f"{letter}{value}")
        self._settings[letter] = value
        if letter == "I":
            self.integration_us = value
        elif letter == "A":
            self.scans = value

    def wavelength_coefficients(self) -> tuple[float, ...]:
        return tuple(
            wire.parse_float(self._query(f"?x{slot}"), f"wavelength coefficient c{i}")
            for i, slot in enumerate(SLOT_COEFFS)
        )

    # -- acquisition -------------------------------------------------------------

    def acquire(self) -> np.ndarray:
        return self.acquire_frame().counts

    def acquire_frame(self) -> wire.Frame:
        """One spectrum (the average of the set scans), with its header flags."""
        if not self.pixel_count:
            self.identify()
        exposure_s = self.integration_us * self.scans / 1e6
        with self._dirty_on_error():
            if self._dirty:
                self.resync()
            self.link.write_line("S")
            first = self.link.read_exact(1, self.reply_timeout + exposure_s * _EXPOSURE_MARGIN)
            if first == wire.NAK:
                self._refused("S")
            if first != wire.STX:
                raise ProtocolError(
                    f"spectrometer answered S with {first!r} instead of STX", wire.FIX_RESYNC
                )
            if self.ascii_transfer:
                header, counts = self._read_ascii()
            else:
                header, counts = self._read_binary()
        raw = ("> S", f"< STX {header.describe()}",
               f"< {header.pixels} counts, min {int(counts.min())}, max {int(counts.max())}")
        self.last_frame = wire.Frame(header, counts, raw)
        return self.last_frame

    def _wire_timeout(self, nbytes: int) -> float:
        return self.reply_timeout + 1.5 * nbytes * 10 / self.link.baudrate

    def _read_binary(self) -> tuple[wire.FrameHeader, np.ndarray]:
        size = wire.block_size(self.pixel_count)
        head = self.link.read_exact(wire.HEADER.size, self._wire_timeout(wire.HEADER.size))
        header = wire.parse_header(head, self.pixel_count)
        rest = self.link.read_exact(size - wire.HEADER.size, self._wire_timeout(size))
        return wire.parse_binary(head + rest, self.pixel_count)

    def _read_ascii(self) -> tuple[wire.FrameHeader, np.ndarray]:
        # ~7 bytes a line in ASCII
        timeout = self._wire_timeout(8 * (self.pixel_count + 2))
        deadline = time.monotonic() + timeout
        header = wire.parse_ascii_header(self.link.read_line(timeout), self.pixel_count)
        lines = [self.link.read_line(max(0.0, deadline - time.monotonic()) or 0.01)
                 for _ in range(header.pixels + 1)]
        return header, wire.parse_ascii_counts(header, lines)

    # -- exchanges ------------------------------------------------------------------

    def _command(self, cmd: str) -> None:
        self._exchange(cmd, query=False)

    def _query(self, cmd: str, raw: list[str] | None = None) -> bytes:
        line = self._exchange(cmd, query=True)
        if raw is not None:
            raw += [f"> {cmd}", f"< {line.decode('ascii', 'replace')}"]
        return line

    def _exchange(self, cmd: str, *, query: bool) -> bytes:
        if self._dirty:
            self.resync()
        with self._dirty_on_error():
            self.link.write_line(cmd)
            reply = self.link.read_exact(1, self.reply_timeout)
            if reply == wire.NAK:
                self._refused(cmd)
            if reply != wire.ACK:
                raise ProtocolError(
                    f"spectrometer answered {cmd!r} with {reply!r} instead of ACK or NAK",
                    wire.FIX_RESYNC, transcript=self.link.transcript(),
                )
            return self.link.read_line(self.reply_timeout) if query else b""

    @contextmanager
    def _dirty_on_error(self) -> Iterator[None]:
        """After a failed exchange bytes may still be in flight: the next one
        resyncs first. Protocol errors get the link's transcript."""
        try:
            yield
        except ProtocolError as e:
            self._dirty = True
            raise ProtocolError(e.what, e.fix, transcript=self.link.transcript()) from None
        except LinkError:
            self._dirty = True
            raise

    def _refused(self, cmd: str):
        what, fix = _REFUSALS.get(cmd[:1], ("command", "check the spectrometer's model and firmware"))
        if cmd.startswith("?x"):
            what, fix = "configuration query", "the spectrometer lacks this slot; check its model and firmware"
        raise DeviceRefused(
            f"spectrometer on {self.link.url} refused the {what} {cmd!r} (NAK)", fix,
            transcript=self.link.transcript(),
        )


def _whole(value: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return value
