"""A simulated device's serial framing, checked against what the client set on the pty.

A pty has one termios, shared by both ends, so a device simulator can read
the baud rate and framing its client configured, and behave like a real
device on a mismatched line: it hears noise and does not answer.

Linux ptys keep the baud rate, stop bits, PARODD and CRTSCTS as set, but force
8 data bits and clear PARENB, so only those four can be compared; a 7-bit
device is modelled by masking what it sends to 7 bits.
"""

from __future__ import annotations

import termios
from dataclasses import dataclass

_BAUD = {
    getattr(termios, f"B{n}"): n
    for n in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400)
}
_SPEED = {n: code for code, n in _BAUD.items()}


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

    def apply(self, fd: int) -> None:
        """Set this framing on the pty, as a device's UART would be set."""
        attrs = termios.tcgetattr(fd)
        cflag = attrs[2] & ~(termios.CSIZE | termios.PARENB | termios.PARODD | termios.CSTOPB | termios.CRTSCTS)
        cflag |= termios.CS7 if self.bytesize == 7 else termios.CS8
        if self.parity != "N":
            cflag |= termios.PARENB | (termios.PARODD if self.parity == "O" else 0)
        cflag |= (termios.CSTOPB if self.stopbits == 2 else 0) | (termios.CRTSCTS if self.rtscts else 0)
        attrs[2], attrs[4], attrs[5] = cflag, _SPEED[self.baudrate], _SPEED[self.baudrate]
        termios.tcsetattr(fd, termios.TCSANOW, attrs)

    def mismatch(self, fd: int) -> str | None:
        """What the client set differently (of what a pty can carry), or None."""
        try:
            attrs = termios.tcgetattr(fd)
        except (termios.error, OSError):
            return None
        cflag = attrs[2]
        theirs = {
            "baud rate": _BAUD.get(attrs[5], attrs[5]),
            "stop bits": 2 if cflag & termios.CSTOPB else 1,
            "odd parity": bool(cflag & termios.PARODD),
            "RTS/CTS": bool(cflag & termios.CRTSCTS),
        }
        ours = {
            "baud rate": self.baudrate, "stop bits": self.stopbits,
            "odd parity": self.parity == "O", "RTS/CTS": self.rtscts,
        }
        wrong = [f"{k} {theirs[k]} (device: {ours[k]})" for k in ours if theirs[k] != ours[k]]
        return ", ".join(wrong) or None
