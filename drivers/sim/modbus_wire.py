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
        self._buf = bytearray()
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
        self._buf.clear()

    def _on_bytes(self, chunk: bytes) -> None:
        self._buf += chunk
        while (frame := self._take_frame()) is not None:
            self._relay(frame)

    def _take_frame(self) -> bytes | None:
        buf = self._buf
        if self.framing == "tcp":
            n = 6 + int.from_bytes(buf[4:6], "big") if len(buf) >= 6 else None
        else:
            n = rtu_request_length(bytes(buf))
        if n is None or len(buf) < n:
            if len(buf) > _MAX_FRAME:
                buf.clear()
            return None
        frame = bytes(buf[:n])
        del buf[:n]
        return frame

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

    def _ask(self, frame: bytes) -> bytes:
        for attempt in (1, 2):
            try:
                sock = self._backend or self._connect()
                sock.sendall(frame)
                return self._read_reply(sock)
            except OSError:
                if self._backend is not None:
                    self._backend.close()
                self._backend = None
                if attempt == 2:
                    return b""
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
