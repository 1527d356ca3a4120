"""Line-oriented byte transport; the only module that imports pyserial.

Protocol drivers see lines (bytes without CR LF) and ``LinkError`` /
``ProtocolError``; they never see pyserial exceptions. ``serial_for_url``
lets one code path serve a tty, a pty, a by-id symlink and ``socket://``.
"""

from __future__ import annotations

import errno
import time
from collections import deque

import serial

from drivers.errors import LinkError, ProtocolError, ReplyTimeout

__all__ = ["SerialLink", "ReplyTimeout", "format_line", "FIX_LOST"]


EOL = b"\r\n"
# A real reply is < 100 bytes; a stream this long without CR LF is line noise
# (usually a baud-rate mismatch) and must not grow memory forever.
MAX_LINE = 4096
# pyserial's own read timeout. Short, so a deadline is honoured to ~50 ms
# without re-applying termios settings on every call (setting .timeout does).
_POLL_S = 0.05

FIX_RESYNC = "the driver resynchronises; if it repeats, check baud rate and framing"
FIX_LOST = "check the cable; the station reconnects automatically"


def format_line(direction: str, data: bytes | str) -> str:
    """``> S`` / ``< S S      0.0998 g``; non-printable bytes shown as repr."""
    if isinstance(data, str):
        return f"{direction} {data}"
    if all(0x20 <= b < 0x7F for b in data):
        return f"{direction} {data.decode('ascii')}"
    return f"{direction} {data!r}"


class SerialLink:
    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        xonxoff: bool = False,
        rtscts: bool = False,
        timeout: float = 1.0,
        history: int = 20,
        setting: str = "the port in the config",
    ) -> None:
        self.url = url
        # Where the user sets this port (e.g. "devices.scale.port"): the driver
        # knows the config, the transport does not.
        self.setting = setting
        self.timeout = timeout
        self._settings = dict(
            baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits, xonxoff=xonxoff,
            rtscts=rtscts,
        )
        self._ser: serial.SerialBase | None = None
        self._buf = bytearray()
        self._history: deque[str] = deque(maxlen=history)

    # -- lifecycle ---------------------------------------------------------

    @property
    def baudrate(self) -> int:
        """For drivers that size timeouts by wire time (a 4 kB spectrum takes 0.36 s at 115200)."""
        return int(self._settings["baudrate"])

    @property
    def is_open(self) -> bool:
        return self._ser is not None and self._ser.is_open

    def open(self) -> None:
        if self.is_open:
            return
        try:
            # A fresh object each time: on reconnect a by-id symlink may now
            # point at a different device node.
            ser = serial.serial_for_url(
                self.url, do_not_open=True, timeout=_POLL_S, write_timeout=5.0, **self._settings
            )
        except (ValueError, serial.SerialException) as e:
            raise LinkError(
                f"cannot use port {self.url!r}: {e}",
                f"set {self.setting} to a device path (/dev/serial/by-id/...) "
                "or socket://host:port",
                transcript=self.transcript(),
            ) from e
        try:
            ser.open()
        except (serial.SerialException, OSError) as e:
            raise self._open_error(e) from e
        self._ser = ser
        self._buf.clear()

    def _open_error(self, e: Exception) -> LinkError:
        code = getattr(e, "errno", None)
        if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            what = f"serial port {self.url} does not exist"
            fix = (
                "check the cable and `ls /dev/serial/by-id/`; "
                f"set {self.setting}"
            )
        elif code in (errno.EACCES, errno.EPERM):
            what = f"permission denied opening {self.url}"
            fix = "add the service user to the dialout group"
        elif code == errno.EBUSY:
            what = f"serial port {self.url} is busy"
            fix = "another program holds the port; stop it (e.g. a terminal or a second station)"
        elif self.url.startswith("socket://"):
            what = f"cannot connect to {self.url}: {e}"
            fix = "check that the serial server or simulator is running at that address"
        else:
            what = f"cannot open serial port {self.url}: {e}"
            fix = (
                "check the cable and `ls /dev/serial/by-id/`; "
                f"set {self.setting}"
            )
        return LinkError(what, fix, transcript=self.transcript())

    def close(self) -> None:
        ser, self._ser = self._ser, None
        self._buf.clear()
        if ser is None:
            return
        # pyserial's socket:// close() skips close() when shutdown() fails on
        # a peer that already hung up, leaking the socket; close it ourselves.
        sock = getattr(ser, "_socket", None)
        try:
            ser.close()
        except (serial.SerialException, OSError):
            pass  # closing a dead port must not mask the error that killed it
        if sock is not None:
            sock.close()

    def __enter__(self) -> SerialLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- I/O ---------------------------------------------------------------

    def _port(self) -> serial.SerialBase:
        if self._ser is None or not self._ser.is_open:
            raise LinkError(
                f"serial port {self.url} is not open",
                "connect the device first; the station reconnects automatically",
                transcript=self.transcript(),
            )
        return self._ser

    def _lost(self, e: Exception) -> LinkError:
        return LinkError(
            f"lost the connection to {self.url}: {e}", FIX_LOST, transcript=self.transcript()
        )

    def write_line(self, text: str) -> None:
        self.write(text.encode("ascii") + EOL, shown=text)

    def write(self, data: bytes, *, shown: str | None = None) -> None:
        """Send bytes as they are (binary protocols, ESC commands without CR LF)."""
        ser = self._port()
        self._history.append(format_line(">", shown if shown is not None else data))
        try:
            ser.write(data)
        except (serial.SerialException, OSError) as e:
            raise self._lost(e) from e

    def read_exact(self, n: int, timeout: float | None = None) -> bytes:
        """Exactly ``n`` bytes (a binary block), or ReplyTimeout / a partial-block ProtocolError."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        ser = self._port()
        while len(self._buf) < n:
            if time.monotonic() >= deadline and not self._pull(ser, n - len(self._buf), block=False):
                if self._buf:
                    got = len(self._buf)
                    raise self._unterminated(
                        bytes(self._buf[:64]), f" ({got} of {n} bytes)",
                        f"{self.url} sent {got} of {n} expected bytes within {limit:g} s",
                    )
                self._timed_out(limit)
            self._pull(ser, n - len(self._buf))
        block = bytes(self._buf[:n])
        del self._buf[:n]
        # Short replies (ACK/NAK, a header) are worth seeing; a spectrum is not.
        self._history.append(format_line("<", block) if n <= 16 else f"< ({n} bytes)")
        return block

    def read_line(self, timeout: float | None = None) -> bytes:
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        ser = self._port()
        while True:
            idx = self._buf.find(EOL)
            if idx >= 0:
                line = bytes(self._buf[:idx])
                del self._buf[: idx + len(EOL)]
                self._history.append(format_line("<", line))
                return line
            if len(self._buf) > MAX_LINE:
                junk = bytes(self._buf[:64])
                raise self._unterminated(
                    junk, " ... (no CR LF)", f"{self.url} sent more than {MAX_LINE} bytes without CR LF, starting {junk!r}"
                )
            if time.monotonic() >= deadline and not self._pull(ser, MAX_LINE, block=False):
                return self._timed_out(limit)
            self._pull(ser, MAX_LINE)

    def _pull(self, ser: serial.SerialBase, most: int, *, block: bool = True) -> bool:
        """Move bytes from the port into the buffer; True if any came.

        Blocking waits up to one poll for the first byte, then takes everything
        already waiting, so that bytes which arrived together stay together: a
        read must never take the first byte of a line, pass its deadline, and
        leave the rest behind as a bogus line of its own (``4 A "SIM0000001"``
        from ``I4 A "SIM0000001"``). Non-blocking only takes what is waiting;
        it runs at the deadline, before a partial line or a timeout is declared.
        """
        try:
            chunk = ser.read(1) if block and not ser.in_waiting else b""
            waiting = ser.in_waiting
            if waiting and len(chunk) < most:
                chunk += ser.read(min(waiting, most - len(chunk)))
        except (serial.SerialException, OSError) as e:
            raise self._lost(e) from e
        self._buf += chunk
        return bool(chunk)

    def _timed_out(self, limit: float) -> bytes:
        if self._buf:
            partial = bytes(self._buf)
            raise self._unterminated(
                partial, " (partial, no CR LF)",
                f"a partial line arrived from {self.url}: {partial!r} without CR LF within {limit:g} s",
            )
        raise ReplyTimeout(
            f"no reply from {self.url} within {limit:g} s",
            "check the cable, that the device is powered on, and that its baud rate "
            "and framing match the config",
            transcript=self.transcript(),
        )

    def _unterminated(self, shown: bytes, note: str, what: str) -> ProtocolError:
        """Bytes that never became a line: drop them all, so the next read starts
        clean, but keep them in the transcript for whoever debugs the link."""
        self._buf.clear()
        self._history.append(format_line("<", shown) + note)
        return ProtocolError(what, FIX_RESYNC, transcript=self.transcript())

    def discard_input(self) -> None:
        self._buf.clear()
        ser = self._port()
        try:
            ser.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            raise self._lost(e) from e

    def transcript(self) -> list[str]:
        return list(self._history)
