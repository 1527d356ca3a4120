"""The wire of a simulated Modbus device: a real pymodbus server behind a SimPort.

``RegisterServer`` (``drivers/modbus_link.py``) serves the register banks on an
internal loopback port. A :class:`~drivers.sim.port.SimPort` in raw-bytes mode
is the device end a driver opens (a pty with a by-id style symlink for RTU, or
a TCP listener for RTU-over-TCP and Modbus TCP); it relays whole request
frames to the server and its replies back. That gives unplug/replug from
SimPort and one place to break replies on purpose:

* ``crc``: the next reply has its last byte flipped (RTU: a CRC error; TCP:
  its protocol id is changed, a malformed frame);
* ``noreply``: the next request is dropped;
* ``timeout S``: every request is dropped for S seconds;
* ``exception``: the next request is answered with Modbus exception 4
  (slave device failure) by the server itself.

``ModbusWire`` has SimPort's lifecycle interface, so it plugs into
``ScaleSimulator._init_wire``.
"""

from __future__ import annotations

import socket
import threading
import time

from drivers.modbus_link import RegisterServer
from drivers.sim.port import SimPort

_BACKEND_TIMEOUT_S = 2.0
_MAX_FRAME = 260  # an RTU frame is at most 256 bytes; anything longer is noise
FAULTS = ("crc", "noreply", "exception", "timeout")


def crc16(data: bytes) -> bytes:
    """Modbus RTU CRC, low byte first."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")


def rtu_request_length(buf: bytes) -> int | None:
    """Length of the RTU request at the start of ``buf``, None if not all there yet."""
    if len(buf) < 2:
        return None
    fc = buf[1]
    if fc in (1, 2, 3, 4, 5, 6):
        return 8
    if fc in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else None
    return len(buf)  # a function we do not frame: hand it over as it is


SUPPORTED_FC = frozenset({1, 2, 3, 4, 5, 6, 15, 16})
_SILENCE_S = 0.02  # > 3.5 character times at 9600 baud (3.6 ms), with room for a loaded machine


class RequestFramer:
    """Cuts a byte stream into request frames, as a slave's receiver does.

    RTU has no length field in every frame and no start marker: a slave finds
    frames by the silence between them (3.5 character times). Bytes still
    waiting after that much silence are noise, dropped before new bytes are
    framed, so one burst of noise can never shift every later frame. Modbus
    TCP frames carry their length; a non-zero protocol id or an impossible
    length means the stream is out of step, and it is dropped (the same
    silence rule applies too).
    """

    def __init__(self, framing: str, *, silence_s: float = _SILENCE_S, clock=time.monotonic) -> None:
        self.framing, self.silence_s, self._clock = framing, silence_s, clock
        self._buf = bytearray()
        self._last = 0.0

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, chunk: bytes) -> list[bytes]:
        now = self._clock()
        if self._buf and now - self._last > self.silence_s:
            self._buf.clear()
        self._last = now
        self._buf += chunk
        frames = []
        while (frame := self._take()) is not None:
            frames.append(frame)
        return frames

    def _take(self) -> bytes | None:
        buf = self._buf
        if self.framing == "tcp":
            if len(buf) >= 4 and buf[2:4] != b"\0\0":
                buf.clear()
                return None
            n = 6 + int.from_bytes(buf[4:6], "big") if len(buf) >= 6 else None
            if n is not None and n < 8:  # MBAP + unit + function at least
                buf.clear()
                return None
        else:
            n = rtu_request_length(bytes(buf))
        if n is None or len(buf) < n:
            if len(buf) > _MAX_FRAME:
                buf.clear()
            return None
        frame = bytes(buf[:n])
        del buf[:n]
        return frame


class ModbusWire:
    def __init__(self, banks: dict[int, int], on_access, *, framing: str = "rtu",
                 link_path: str | None = None, tcp: tuple[str, int] | None = None,
                 name: str = "modbus-sim") -> None:
        if framing == "tcp" and tcp is None:
            raise ValueError("Modbus TCP needs a TCP address (tcp=(host, port))")
        self.framing, self._units = framing, set(banks)
        self._user_access = on_access
        self._server = RegisterServer(banks, self._on_access, framing=framing)
        self._port = SimPort(on_bytes=self._on_bytes, on_plug=self._on_plug,
                             link_path=link_path, tcp=tcp, name=name)
        self._backend: socket.socket | None = None
        self._framer = RequestFramer(framing)
        self._lock = threading.Lock()
        self._next: set[str] = set()
        self._mute_until = 0.0
        self.requests = 0  # frames relayed, for tests and status

    # -- SimPort-like lifecycle ---------------------------------------------

    @property
    def path(self) -> str:
        p = self._port.path
        return "tcp://" + p[len("socket://"):] if self.framing == "tcp" else p

    @property
    def plugged(self) -> bool:
        return self._port.plugged

    def start(self) -> ModbusWire:
        self._server.start()
        self._port.start()
        return self

    def stop(self) -> None:
        self._port.stop()
        self._server.stop()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def unplug(self) -> None:
        self._port.unplug()

    def replug(self) -> None:
        self._port.replug()

    # -- faults (any thread) -------------------------------------------------

    def inject(self, kind: str, seconds: float | None = None) -> None:
        with self._lock:
            if kind == "timeout":
                if seconds is None or seconds < 0:
                    raise ValueError("fault timeout needs a duration in seconds")
                self._mute_until = time.monotonic() + seconds
            elif kind in FAULTS and seconds is None:
                self._next.add(kind)
            else:
                raise ValueError(f"unknown fault {kind!r}; use {', '.join(FAULTS[:-1])} or timeout S")

    def clear_faults(self) -> None:
        with self._lock:
            self._next.clear()
            self._mute_until = 0.0

    def _take(self, kind: str) -> bool:
        with self._lock:
            if kind in self._next:
                self._next.discard(kind)
                return True
            return False

    # -- server thread -------------------------------------------------------

    def _on_access(self, unit, fc, address, count, registers, written):
        if self._take("exception"):
            return 4
        return self._user_access(unit, fc, address, count, registers, written)

    # -- SimPort service thread ---------------------------------------------

    def _on_plug(self) -> None:
        self._framer.reset()

    def _on_bytes(self, chunk: bytes) -> None:
        for frame in self._framer.feed(chunk):
            self._relay(frame)

    def _relay(self, frame: bytes) -> None:
        with self._lock:
            muted = time.monotonic() < self._mute_until
        if self.framing == "rtu":
            # A slave ignores frames with a bad CRC and frames for other units.
            if len(frame) < 4 or crc16(frame[:-2]) != frame[-2:] or frame[0] not in self._units:
                return
        if muted or self._take("noreply"):
            return
        self.requests += 1
        fc = frame[1] if self.framing == "rtu" else frame[7]
        if fc not in SUPPORTED_FC:
            reply = self._illegal_function(frame, fc)
        else:
            reply = self._ask(frame)
        if not reply:
            return
        if self._take("crc"):
            reply = bytearray(reply)
            if self.framing == "rtu":
                reply[-1] ^= 0xFF
            else:
                reply[3] ^= 0x01  # protocol id must be 0
            reply = bytes(reply)
        self._port.write(reply)

    def _illegal_function(self, frame: bytes, fc: int) -> bytes:
        """Exception 1, answered here: the server would not frame a reply we can size."""
        if self.framing == "rtu":
            pdu = bytes([frame[0], (fc | 0x80) & 0xFF, 1])
            return pdu + crc16(pdu)
        return frame[:4] + (3).to_bytes(2, "big") + bytes([frame[6], (fc | 0x80) & 0xFF, 1])

    def _ask(self, frame: bytes) -> bytes:
        try:
            sock = self._backend or self._connect()
        except OSError:
            return b""
        try:
            sock.sendall(frame)
            return self._read_reply(sock)
        except OSError:
            # No answer, or the server hung up: start over on a fresh connection,
            # so a late reply can never be taken for the next one.
            sock.close()
            self._backend = None
            return b""

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self._server.address, timeout=_BACKEND_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._backend = sock
        return sock

    def _read_reply(self, sock: socket.socket) -> bytes:
        if self.framing == "tcp":
            head = _recv_exact(sock, 6)
            return head + _recv_exact(sock, int.from_bytes(head[4:6], "big"))
        head = _recv_exact(sock, 3)
        fc = head[1]
        if fc & 0x80:
            rest = 2
        elif fc in (1, 2, 3, 4):
            rest = head[2] + 2
        else:
            rest = 5
        return head + _recv_exact(sock, rest)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("the Modbus server closed the connection")
        data += chunk
    return data
