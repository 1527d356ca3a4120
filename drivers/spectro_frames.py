"""Byte layouts of the serial spectrometer protocol (docs/DEVICES.md, "Spectrometer (serial)").

Both sides use this module: the driver decodes, the simulator encodes. The
decoders raise only ``ProtocolError`` whatever the bytes, so a noisy line can
never surface as an IndexError or a bogus spectrum. Words are big-endian
(MSB first), as on the classic Ocean Optics RS-232 interface.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

import numpy as np

from drivers.errors import ProtocolError

ACK, NAK, STX = b"\x06", b"\x15", b"\x02"
START, END = 0xFFFF, 0xFFFD
FLAG_SATURATED, FLAG_LAMP = 0x0001, 0x0002
# start marker, pixels, scans, integration (u32), flags
HEADER = struct.Struct(">HHHIH")
TRAILER = struct.Struct(">HH")  # end marker, CRC-16
MAX_PIXELS = 8192  # no CCD spectrometer we drive has more; a larger count is noise

FIX_RESYNC = "the driver resynchronises; if it repeats, check the cable, baud rate and framing"


@dataclass(frozen=True)
class FrameHeader:
    pixels: int
    scans: int
    integration_us: int
    flags: int

    @property
    def saturated(self) -> bool:
        return bool(self.flags & FLAG_SATURATED)

    @property
    def lamp_on(self) -> bool:
        return bool(self.flags & FLAG_LAMP)

    def describe(self) -> str:
        return (f"pixels={self.pixels} scans={self.scans} integration_us={self.integration_us} "
                f"flags=0x{self.flags:04X}")


@dataclass(frozen=True)
class Frame:
    """One acquired spectrum: the counts and the header that came with them."""

    header: FrameHeader
    counts: np.ndarray  # uint16, one value per pixel
    raw: tuple[str, ...]  # the exchange, for the record (counts summarised, not listed)

    @property
    def saturated(self) -> bool:
        return self.header.saturated


def _bad(what: str) -> ProtocolError:
    return ProtocolError(f"bad spectrometer reply: {what}", FIX_RESYNC)


def crc16(data: bytes) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0), the stdlib's ``binascii.crc_hqx``."""
    return binascii.crc_hqx(data, 0)


def block_size(pixels: int) -> int:
    """Bytes after STX: header, two bytes per pixel, trailer."""
    return HEADER.size + 2 * pixels + TRAILER.size


# -- binary block -------------------------------------------------------------


def encode_binary(header: FrameHeader, counts: np.ndarray) -> bytes:
    """STX + the block; ``counts`` must already be uint16 of ``header.pixels``."""
    body = HEADER.pack(START, header.pixels, header.scans, header.integration_us, header.flags)
    body += np.asarray(counts, dtype=">u2").tobytes()
    body += struct.pack(">H", END)
    return STX + body + struct.pack(">H", crc16(body))


def parse_header(data: bytes, expected_pixels: int | None = None) -> FrameHeader:
    if len(data) != HEADER.size:
        raise _bad(f"block header is {len(data)} bytes, expected {HEADER.size}")
    start, pixels, scans, integration_us, flags = HEADER.unpack(data)
    if start != START:
        raise _bad(f"block does not start with 0xFFFF (got 0x{start:04X})")
    if not 0 < pixels <= MAX_PIXELS:
        raise _bad(f"block announces {pixels} pixels")
    if expected_pixels is not None and pixels != expected_pixels:
        raise _bad(f"block announces {pixels} pixels, the device reported {expected_pixels}")
    if scans < 1:
        raise _bad("block announces 0 scans")
    return FrameHeader(pixels, scans, integration_us, flags)


def parse_binary(block: bytes, expected_pixels: int | None = None) -> tuple[FrameHeader, np.ndarray]:
    """Decode the bytes after STX. A short, long or corrupted block is a ProtocolError."""
    header = parse_header(block[: HEADER.size], expected_pixels)
    want = block_size(header.pixels)
    if len(block) != want:
        raise _bad(f"block is {len(block)} bytes, {header.describe()} needs {want} (truncated?)")
    end, crc = TRAILER.unpack(block[-TRAILER.size:])
    if end != END:
        raise _bad(f"block does not end with 0xFFFD (got 0x{end:04X}); bytes were lost or added")
    got = crc16(block[:-2])
    if crc != got:
        raise _bad(f"block checksum 0x{crc:04X} does not match the data (0x{got:04X}); "
                   "the spectrum was corrupted on the wire")
    counts = np.frombuffer(block, dtype=">u2", count=header.pixels, offset=HEADER.size)
    return header, counts.astype(np.uint16)


# -- ASCII block (debugging with a terminal) -----------------------------------


def encode_ascii(header: FrameHeader, counts: np.ndarray) -> bytes:
    lines = [f"S {header.pixels} {header.scans} {header.integration_us} {header.flags}"]
    lines += [str(int(c)) for c in counts]
    lines.append(f"E {int(np.asarray(counts, dtype=np.int64).sum()) % 65536}")
    return STX + "\r\n".join(lines).encode("ascii") + b"\r\n"


def _ascii_int(line: bytes, what: str, limit: int) -> int:
    if not line or len(line) > 10 or not line.isdigit():
        raise _bad(f"{what} {line[:32]!r} is not a decimal number")
    value = int(line)
    if value > limit:
        raise _bad(f"{what} {value} is out of range")
    return value


def parse_ascii_header(line: bytes, expected_pixels: int | None = None) -> FrameHeader:
    parts = line.split(b" ")
    if len(parts) != 5 or parts[0] != b"S":
        raise _bad(f"ASCII block header {line[:64]!r} is not 'S <pixels> <scans> <us> <flags>'")
    pixels, scans, us, flags = (
        _ascii_int(p, "header field", lim) for p, lim in zip(parts[1:], (MAX_PIXELS, 65535, 2**32 - 1, 65535))
    )
    packed = HEADER.pack(START, pixels, scans, us, flags)
    return parse_header(packed, expected_pixels)


def parse_ascii_counts(header: FrameHeader, lines: list[bytes]) -> np.ndarray:
    """``lines``: one count per pixel, then the ``E <sum mod 65536>`` line."""
    if len(lines) != header.pixels + 1:
        raise _bad(f"ASCII block has {len(lines) - 1} count lines, expected {header.pixels}")
    counts = np.array([_ascii_int(x, "count", 65535) for x in lines[:-1]], dtype=np.uint16)
    end = lines[-1]
    if not end.startswith(b"E "):
        raise _bad(f"ASCII block ends with {end[:32]!r}, not 'E <sum>'")
    total = _ascii_int(end[2:], "ASCII block sum", 65535)
    got = int(counts.sum(dtype=np.int64)) % 65536
    if total != got:
        raise _bad(f"ASCII block sum {total} does not match the counts ({got})")
    return counts


def parse_ascii(data: bytes, expected_pixels: int | None = None) -> tuple[FrameHeader, np.ndarray]:
    """Decode a whole ASCII block after STX (CR LF separated lines)."""
    if not data.endswith(b"\r\n"):
        raise _bad("ASCII block does not end with CR LF (truncated?)")
    lines = data[:-2].split(b"\r\n")
    header = parse_ascii_header(lines[0], expected_pixels)
    return header, parse_ascii_counts(header, lines[1:])


# -- short replies ---------------------------------------------------------------


def parse_text(line: bytes, what: str) -> str:
    """The ASCII line after an ACK to a ``?`` query."""
    if not line or len(line) > 64 or any(b < 0x20 or b > 0x7E for b in line):
        raise _bad(f"{what} reply {line[:64]!r} is not a printable line")
    return line.decode("ascii")


def parse_float(line: bytes, what: str) -> float:
    text = parse_text(line, what)
    try:
        value = float(text)
    except ValueError:
        raise _bad(f"{what} {text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _bad(f"{what} {text!r} is not a finite number")
    return value


def parse_uint(line: bytes, what: str, limit: int = 2**32 - 1) -> int:
    return _ascii_int(line, what, limit)
