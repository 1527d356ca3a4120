"""A simulated device's serial framing, checked against what the client set on the pty.

A pty has one termios, shared by both ends, so a device simulator can read
the baud rate and framing its client configured and behave like a real
device on a mismatched line: it hears noise and does not answer.

Two Linux pty quirks shape this module. A pty keeps the baud rate, stop
bits, PARODD and CRTSCTS as set but forces 8 data bits and clears PARENB, so
only those four can be compared (a 7-bit device is modelled by masking what
it sends). And a ``tcsetattr`` whose only changes are the data bits or parity
is refused with EINVAL, because nothing it asked for could be applied; a
client re-opening the port with the settings it used before would fail. So
once the device has read the client's settings it parks the pty at 50 baud
(which no client uses): every open then changes the speed and is accepted,
and a parked speed means "the same client as before".
"""

from __future__ import annotations

import termios
from dataclasses import dataclass

_BAUD = {
    getattr(termios, f"B{n}"): n
    for n in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
}
_SPEED = {n: code for code, n in _BAUD.items()}  # the baud rates a device may use


@dataclass(frozen=True)
class Framing:
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"  # N, E or O
    stopbits: int = 1
    rtscts: bool = False

    def __post_init__(self) -> None:
        if self.baudrate not in _SPEED:
            raise ValueError(f"baud rate {self.baudrate} is not one of {sorted(_SPEED)}")
        if self.bytesize not in (7, 8) or self.parity not in ("N", "E", "O") or self.stopbits not in (1, 2):
            raise ValueError(f"unsupported framing {self.describe()}")

    def describe(self) -> str:
        hs = ", RTS/CTS" if self.rtscts else ""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}{hs}"

    def mismatch(self, client: dict | None) -> str | None:
        """What the client set differently (of what a pty can carry), or None."""
        if client is None:
            return "the client never set the line's speed and framing"
        ours = {
            "baud rate": self.baudrate, "stop bits": self.stopbits,
            "odd parity": self.parity == "O", "RTS/CTS": self.rtscts,
        }
        wrong = [f"{k} {client[k]} (device: {ours[k]})" for k in ours if client[k] != ours[k]]
        return ", ".join(wrong) or None


_PARKED = termios.B50


class PtyLine:
    """The settings of whoever has the pty open now (see the module docstring)."""

    def __init__(self) -> None:
        self.client: dict | None = None

    def plugged(self, fd: int) -> None:
        self.client = None
        self._park(fd, termios.tcgetattr(fd))

    def read(self, fd: int) -> dict | None:
        try:
            attrs = termios.tcgetattr(fd)
        except (termios.error, OSError):
            return self.client
        if attrs[5] != _PARKED:  # a client opened the port and set its speed
            cflag = attrs[2]
            self.client = {
                "baud rate": _BAUD.get(attrs[5], attrs[5]),
                "stop bits": 2 if cflag & termios.CSTOPB else 1,
                "odd parity": bool(cflag & termios.PARODD),
                "RTS/CTS": bool(cflag & termios.CRTSCTS),
            }
            self._park(fd, attrs)
        return self.client

    @staticmethod
    def _park(fd: int, attrs: list) -> None:
        attrs[4] = attrs[5] = _PARKED
        try:
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (termios.error, OSError):
            pass  # the client just closed it; the next open sets a speed anyway
