"""TEMPORARY: the pymodbus-touching code the spectrometer front-end needs.

``drivers/modbus_link.py`` (being written on another branch) is the only module
allowed to import pymodbus; when both land, the lead folds this file into it
and deletes this one. It offers the smallest interface the spectrometer driver
and simulator use:

* :class:`ModbusLink`: a client (TCP, or RTU framing on a serial port or a
  ``socket://`` URL) with ``read_holding``, ``read_input``, ``write_register``
  and ``write_registers``; pymodbus failures become ``drivers.errors`` types.
* :class:`RegisterServer`: one register space served over TCP (Modbus TCP, or
  RTU framing over TCP) from a thread, with a synchronous ``handler`` that
  sees every access and can serve live values or answer with an exception.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

from pymodbus import FramerType
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout

EXCEPTIONS = {
    1: "illegal function (1)", 2: "illegal data address (2)", 3: "illegal data value (3)",
    4: "device failure (4)", 5: "acknowledge (5)", 6: "device busy (6)",
}
_START_WAIT_S = 5.0


class ModbusLink:
    """``url``: ``tcp://host:port`` (Modbus TCP), ``socket://host:port`` (RTU frames over TCP)
    or a serial port such as ``/dev/serial/by-id/...`` (RTU)."""

    def __init__(self, url: str, *, device_id: int = 1, timeout: float = 1.0, baudrate: int = 19200,
                 parity: str = "N", setting: str = "the port in the config", history: int = 20) -> None:
        self.url, self.device_id, self.timeout, self.setting = url, device_id, timeout, setting
        self.baudrate = baudrate
        scheme = url.partition("://")[0]
        if scheme in ("tcp", "socket"):
            # socket:// is a serial line carried over TCP (pyserial's convention):
            # RTU frames with their CRC. pymodbus's serial client would poll
            # in_waiting, which a socket reports as 0/1, so it gets RTU over TCP.
            host, _, port = url.partition("://")[2].rpartition(":")
            self.framing = "tcp" if scheme == "tcp" else "rtu"
            framer = FramerType.SOCKET if scheme == "tcp" else FramerType.RTU
            self._make = lambda: ModbusTcpClient(host, port=int(port), framer=framer, timeout=timeout,
                                                 retries=0)
        else:
            self.framing = "rtu"
            self._make = lambda: ModbusSerialClient(url, framer=FramerType.RTU, baudrate=baudrate,
                                                    parity=parity, timeout=timeout, retries=0)
        self._client: ModbusTcpClient | ModbusSerialClient | None = None
        self._history: deque[str] = deque(maxlen=history)

    @property
    def is_open(self) -> bool:
        return self._client is not None

    def open(self) -> None:
        if self._client is not None:
            return
        client = self._make()
        if not client.connect():
            client.close()
            raise LinkError(f"cannot connect to the Modbus device at {self.url}",
                            f"check the cable/address and that the device is powered on; set {self.setting}",
                            transcript=self.transcript())
        self._client = client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def transcript(self) -> list[str]:
        return list(self._history)

    # -- requests -----------------------------------------------------------

    def read_holding(self, address: int, count: int) -> list[int]:
        return self._read("FC03", address, count)

    def read_input(self, address: int, count: int) -> list[int]:
        return self._read("FC04", address, count)

    def write_register(self, address: int, value: int) -> None:
        self._call("FC06", f"{address} <- {value}", "write_register", address, value)

    def write_registers(self, address: int, values: list[int]) -> None:
        self._call("FC16", f"{address} <- {list(values)}", "write_registers", address, list(values))

    def _read(self, fc: str, address: int, count: int) -> list[int]:
        method = "read_holding_registers" if fc == "FC03" else "read_input_registers"
        rr = self._call(fc, f"{address} x{count}", method, address, count=count)
        regs = list(rr.registers)
        if len(regs) != count:
            raise ProtocolError(f"{fc} {address} x{count} from {self.url} returned {len(regs)} registers",
                                "check the device id and framing", transcript=self.transcript())
        return regs

    def _call(self, fc: str, shown: str, method: str, *args, **kw):
        if self._client is None:
            self.open()  # after a timeout: a fresh connection drops any late reply
        self._history.append(f"> {fc} {shown}")
        try:
            rr = getattr(self._client, method)(*args, device_id=self.device_id, **kw)
        except ConnectionException as e:
            self.close()
            raise LinkError(f"lost the Modbus connection to {self.url}: {e}",
                            "check the cable; the station reconnects automatically",
                            transcript=self.transcript()) from None
        except ModbusIOException as e:
            self._history.append("< (no reply)")
            self.close()
            raise ReplyTimeout(f"no Modbus reply from {self.url} within {self.timeout:g} s ({e})",
                               "check the device id, baud rate and framing, and that it is powered on",
                               transcript=self.transcript()) from None
        except ModbusException as e:
            raise ProtocolError(f"bad Modbus reply from {self.url}: {e}", "check framing and baud rate",
                                transcript=self.transcript()) from None
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            self._history.append(f"< exception {EXCEPTIONS.get(code, code)}")
            raise DeviceRefused(f"Modbus device at {self.url} answered {fc} {shown} with exception "
                                f"{EXCEPTIONS.get(code, code)}", _EXC_FIX.get(code, "check the register map"),
                                transcript=self.transcript())
        self._history.append(f"< {fc} ok" if not hasattr(rr, "registers") or fc in ("FC06", "FC16")
                             else f"< {len(rr.registers)} registers")
        return rr


_EXC_FIX = {
    2: "the register is not in the device's map (or is read-only); check the register map",
    3: "the value is out of the device's range; see the register map",
    6: "the device is busy with an acquisition; wait for it to finish",
}

# handler(function_code, address, count, values) -> registers to serve
# (reads), an exception code, or None.
Handler = Callable[[int, int, int, list[int] | None], list[int] | int | None]


class RegisterServer:
    """A register space 0..size-1 on TCP, served from its own event-loop thread.

    ``framing``: ``"tcp"`` (MBAP) or ``"rtu"`` (RTU frames with CRC over TCP).
    ``delay_s()`` is awaited before each answer (a muted device: the client times out).
    """

    def __init__(self, size: int, handler: Handler, *, host: str = "127.0.0.1", port: int = 0,
                 framing: str = "tcp", device_id: int = 1,
                 delay_s: Callable[[], float] = lambda: 0.0) -> None:
        self.size, self.handler, self.framing, self.delay_s = size, handler, framing, delay_s
        self.host, self.port, self.device_id = host, port, device_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def _action(self, fc, start, address, count, registers, values):
        delay = self.delay_s()
        if delay > 0:
            await asyncio.sleep(delay)
        result = self.handler(fc, address, count, None if values is None else list(values))
        if isinstance(result, int):
            return ExcCodes(result)
        if result is not None:
            registers[address - start: address - start + count] = result
        return None

    def start(self) -> RegisterServer:
        ready, box = threading.Event(), []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._listen())
            except BaseException as e:  # hand it to start()
                box.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="modbus-sim", daemon=True)
        self._thread.start()
        if not ready.wait(_START_WAIT_S):
            raise RuntimeError("Modbus simulator did not start")
        if box:
            raise OSError(f"cannot listen on {self.host}:{self.port}: {box[0]}")
        return self

    async def _listen(self) -> None:
        device = SimDevice(id=self.device_id, action=self._action,
                           simdata=[SimData(address=0, count=self.size, values=0, datatype=DataType.REGISTERS)])
        framer = FramerType.SOCKET if self.framing == "tcp" else FramerType.RTU
        server = ModbusTcpServer(device, framer=framer, address=(self.host, self.port))
        await server.serve_forever(background=True)
        sockets = getattr(server.transport, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]  # replug reuses the same port
        self._server = server

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        server, self._server = self._server, None

        async def shutdown() -> None:
            if server is not None:
                await server.shutdown()
            # Requests still waiting (a muted device) die with the device.
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(_START_WAIT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_START_WAIT_S)
            self._loop = self._thread = None
