"""Modbus RTU / TCP transport; the only module that imports pymodbus.

Drivers see register lists and ``drivers.errors`` types, never pymodbus
objects. One :class:`ModbusLink` is one bus: requests are serialised by a lock
and spaced by ``gap_s`` (RS-485 slaves drop a request that follows another
slave's reply too closely; USB adapters deliver bytes in batches). Two devices
on one RS-485 bus (a scale and an ambient sensor with different unit ids) use
the same link object: :func:`shared_link` hands out one per URL, and
:meth:`ModbusLink.open` / :meth:`ModbusLink.close` count their users.

URLs: a serial device or pty path (``/dev/serial/by-id/...``) or
``socket://host:port`` is RTU; ``tcp://host:port`` is Modbus TCP. What needs
no pymodbus (URL parsing, the per-URL registry, exception codes, transcript
lines) is in ``drivers/modbus_bus.py`` and ``drivers/modbus_codes.py``.

:class:`RegisterServer` is the simulators' half: register banks served by a
real pymodbus server on a loopback port, its asyncio loop in its own thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.modbus_bus import LinkRegistry, parse_url
from drivers.modbus_codes import (
    FC_READ_HOLDING, FC_READ_INPUT, FC_WRITE_MULTIPLE, FC_WRITE_SINGLE, MAX_READ, exception_error, exception_line,
    shown,
)

__all__ = ["ModbusLink", "shared_link", "RegisterServer"]

# pymodbus logs every timeout at ERROR; the driver's errors already say it.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


class ModbusLink:
    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: int = 1,
        timeout: float = 1.0,
        gap_s: float = 0.0,
        history: int = 20,
        setting: str = "the port in the config",
    ) -> None:
        self.url, self.setting, self.timeout, self.gap_s = url, setting, timeout, gap_s
        self._settings = dict(baudrate=baudrate, bytesize=bytesize, parity=parity, stopbits=stopbits)
        try:
            self.kind, self._host, self._port = parse_url(url)
        except ValueError as e:
            raise LinkError(
                f"cannot use Modbus port {url!r}: {e}",
                f"set {setting} to a device path (/dev/serial/by-id/...), socket://host:port (RTU) "
                "or tcp://host:port (Modbus TCP)",
            ) from None
        self._lock = threading.RLock()
        self._client: ModbusSerialClient | ModbusTcpClient | None = None
        self._users = 0
        self._last_end = 0.0
        self._history: deque[str | tuple] = deque(maxlen=history)
        self._shared_settings: dict | None = None  # set by shared_link()
        self._rx = bytearray()  # raw bytes of the current reply, from pymodbus's trace hook

    # -- lifecycle ---------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def framing(self) -> str:
        return "tcp" if self.kind == "tcp" else "rtu"

    def open(self) -> None:
        """Open the bus for one more user (idempotent per user: see :meth:`close`)."""
        with self._lock:
            if self._shared_settings is not None:  # back in the registry after its last close
                _SHARED.back(self.url, self, self._shared_settings)
            self._users += 1
            try:
                self._connect()
            except BaseException:
                self._users -= 1
                raise

    def close(self) -> None:
        """One user leaves; the port closes when the last one does (and a shared
        link is forgotten, so the next user may choose other settings)."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._disconnect()
                _SHARED.forget(self.url, self)

    def reopen(self) -> None:
        """Close and reconnect the port for all its users (after an unplug)."""
        with self._lock:
            self._disconnect()
            self._connect()

    def _make_client(self):
        common = dict(timeout=self.timeout, retries=0, trace_packet=self._trace)
        if self.kind == "tcp":
            return ModbusTcpClient(self._host, port=self._port, **common)
        if self.kind == "rtu-socket":
            # RTU frames over TCP (a serial server). pymodbus's serial client
            # on pyserial's socket:// polls byte by byte (~100 ms a request);
            # its TCP client with the RTU framer reads the socket directly.
            return ModbusTcpClient(self._host, port=self._port, framer=FramerType.RTU, **common)
        return ModbusSerialClient(self.url, framer=FramerType.RTU, **self._settings, **common)

    def _connect(self) -> None:
        if self.is_open:
            return
        if self.kind == "rtu" and not os.path.exists(self.url):
            raise LinkError(
                f"serial port {self.url} does not exist",
                f"check the cable and `ls /dev/serial/by-id/`; set {self.setting}",
                transcript=self.transcript(),
            )
        client = self._make_client()
        if not client.connect():
            client.close()
            if self.kind == "rtu":
                what = f"cannot open serial port {self.url}"
                fix = (f"check that no other program holds it and that the service user is in the "
                       f"dialout group; set {self.setting}")
            else:
                what = f"cannot connect to {self.url}"
                fix = f"check that the Modbus device or simulator is running at that address; set {self.setting}"
            raise LinkError(what, fix, transcript=self.transcript())
        self._client = client

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except (OSError, ModbusException):
                pass  # closing a dead port must not mask the error that killed it

    def __enter__(self) -> ModbusLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------

    def read_holding(self, unit: int, address: int, count: int) -> list[int]:
        return self._request(FC_READ_HOLDING, unit, address, count=count)

    def read_input(self, unit: int, address: int, count: int) -> list[int]:
        return self._request(FC_READ_INPUT, unit, address, count=count)

    def write_register(self, unit: int, address: int, value: int) -> None:
        self._request(FC_WRITE_SINGLE, unit, address, values=[value])

    def write_registers(self, unit: int, address: int, values: Sequence[int]) -> None:
        self._request(FC_WRITE_MULTIPLE, unit, address, values=list(values))

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            self._rx[:] = data  # pymodbus passes its whole receive buffer each time
        return data

    def _request(self, fc: int, unit: int, address: int, *, count: int = 0,
                 values: list[int] | None = None) -> list[int]:
        if values is None:
            if not 1 <= count <= MAX_READ:
                raise ValueError(f"count must be 1..{MAX_READ}, got {count}")
        elif not values or any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values must be 0..65535: {values!r}")
        with self._lock:
            client = self._client
            # A client pymodbus closed itself (TCP, after repeated timeouts)
            # reconnects inside the next request; only our own close() stops it.
            if client is None:
                raise LinkError(
                    f"Modbus port {self.url} is not open",
                    "connect the device first; the station reconnects automatically",
                    transcript=self.transcript(),
                )
            wait = self._last_end + self.gap_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._history.append((">", fc, unit, address, count, values))
            self._rx.clear()
            try:
                if fc == FC_READ_HOLDING:
                    rr = client.read_holding_registers(address, count=count, device_id=unit)
                elif fc == FC_READ_INPUT:
                    rr = client.read_input_registers(address, count=count, device_id=unit)
                elif fc == FC_WRITE_SINGLE:
                    rr = client.write_register(address, values[0], device_id=unit)
                else:
                    rr = client.write_registers(address, values, device_id=unit)
            except ModbusIOException:
                raise self._no_reply(unit) from None
            except (ConnectionException, OSError) as e:
                self._disconnect()
                self._history.append("< (connection lost)")
                raise LinkError(
                    f"lost the connection to {self.url} (unplugged, powered off, or the cable is loose)",
                    "check the cable; the station reconnects automatically",
                    transcript=self.transcript(),
                ) from None
            except ModbusException as e:
                raise self._malformed(f"{e}") from None
            finally:
                self._last_end = time.monotonic()
            if rr.isError():
                raise self._exception_reply(unit, getattr(rr, "exception_code", 0))
            if values is not None:
                self._history.append("< ok")
                return []
            regs = list(rr.registers)
            if len(regs) != count:
                raise self._malformed(f"asked for {count} registers, got {len(regs)}")
            self._history.append(("<", regs))
            return regs

    def _no_reply(self, unit: int) -> ProtocolError | ReplyTimeout:
        if self._rx:
            return self._malformed("the reply failed its CRC or framing check")
        self._history.append("< (no reply)")
        return ReplyTimeout(
            f"no reply from unit {unit} on {self.url} within {self.timeout:g} s",
            "check the cable, that the device is powered, and that its unit id, baud rate and "
            f"framing match the config ({self.setting})",
            transcript=self.transcript(),
        )

    def _malformed(self, why: str) -> ProtocolError:
        raw = bytes(self._rx[:64])
        self._history.append(f"< bad frame {raw.hex(' ')}" if raw else f"< bad frame ({why})")
        self._rx.clear()
        return ProtocolError(
            f"unreadable Modbus reply on {self.url}: {why}",
            "noise on the bus: check the RS-485 wiring (A/B, termination, shield) and the baud rate; "
            "the next request retries",
            transcript=self.transcript(),
        )

    def _exception_reply(self, unit: int, code: int) -> ProtocolError | DeviceRefused:
        self._history.append(exception_line(code))
        return exception_error(code, f"unit {unit} on {self.url}", self.setting, self.transcript())

    def transcript(self) -> list[str]:
        return [shown(e) for e in self._history]


_SHARED: LinkRegistry[ModbusLink] = LinkRegistry()


def shared_link(url: str, **settings) -> ModbusLink:
    """One link object per bus URL, so devices on one RS-485 bus take turns."""

    def make() -> ModbusLink:
        link = ModbusLink(url, **settings)
        link._shared_settings = settings
        return link

    return _SHARED.get(url, settings, make)


# ---------------------------------------------------------------------------
# Server side, for the simulators


# on_access(unit, function_code, address, count, registers, written) -> exception code or None.
# ``registers`` is the unit's whole bank (index = protocol address), to be
# updated in place; ``written`` holds the values of a write request.
AccessHook = Callable[[int, int, int, int, list, "list[int] | None"], "int | None"]


class RegisterServer:
    """Register banks (one per unit id) served by pymodbus on a loopback TCP port.

    ``framing="rtu"`` speaks RTU frames (with CRC) over the socket, ``"tcp"``
    speaks Modbus TCP. ``on_access`` runs on the server's thread for every
    request, before pymodbus answers it.
    """

    def __init__(self, banks: dict[int, int], on_access: AccessHook, *, framing: str = "rtu",
                 host: str = "127.0.0.1") -> None:
        if framing not in ("rtu", "tcp"):
            raise ValueError("framing must be 'rtu' or 'tcp'")
        self._banks, self._on_access, self._framing, self._host = banks, on_access, framing, host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] = (host, 0)

    def _device(self, unit: int, size: int) -> SimDevice:
        async def action(fc, start, address, count, registers, values):
            code = self._on_access(unit, fc, address - start, count, registers,
                                   list(values) if values is not None else None)
            return ExcCodes(code) if code else None

        return SimDevice(id=unit, simdata=[SimData(address=0, count=size, values=0,
                                                   datatype=DataType.REGISTERS)], action=action)

    def start(self) -> tuple[str, int]:
        ready, box = threading.Event(), []

        async def main() -> None:
            try:
                devices = [self._device(u, n) for u, n in sorted(self._banks.items())]
                framer = FramerType.RTU if self._framing == "rtu" else FramerType.SOCKET
                # A real RS-485 slave stays silent for a unit id that is not its own.
                self._server = ModbusTcpServer(devices, framer=framer, address=(self._host, 0),
                                               ignore_missing_devices=True)
                await self._server.serve_forever(background=True)
                sock = self._server.transport.sockets[0]
                self.address = sock.getsockname()[:2]
            except BaseException as e:  # hand it to start()'s caller
                box.append(e)
                ready.set()
                return
            ready.set()
            await self._server.serving

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name=f"modbus-{self._framing}-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the Modbus server did not start")
        if box:
            raise box[0]
        return self.address

    def stop(self) -> None:
        loop, server, thread = self._loop, self._server, self._thread
        self._server = self._thread = None
        if loop is None or server is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop)
        thread.join(5)
