"""Modbus function codes, exception codes and the link's transcript lines.

Kept apart from ``drivers/modbus_link.py`` (the pymodbus boundary) because
they are pure: the simulators and tests use them too.
"""

from __future__ import annotations

from collections.abc import Sequence

from drivers.errors import DeviceRefused, ProtocolError

__all__ = [
    "FC_READ_HOLDING", "FC_READ_INPUT", "FC_WRITE_SINGLE", "FC_WRITE_MULTIPLE", "MAX_READ",
    "EXCEPTION_NAMES", "BUSY_CODES", "ModbusExceptionReply", "ModbusBusy", "exception_error",
    "exception_line", "hexwords", "shown",
]

FC_READ_HOLDING, FC_READ_INPUT, FC_WRITE_SINGLE, FC_WRITE_MULTIPLE = 3, 4, 6, 16
MAX_READ = 125  # registers per FC03/FC04 request (Modbus spec)

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
# The device understood the request but cannot serve it now: DeviceRefused.
# The others mean our request does not fit the device (wrong map or unit id).
BUSY_CODES = frozenset({4, 5, 6, 10, 11})


class ModbusExceptionReply(ProtocolError):
    """The device answered with a Modbus exception code that means our request
    does not fit it (illegal function / address / value)."""

    def __init__(self, code: int, what: str, fix: str, transcript: list[str]) -> None:
        super().__init__(what, fix, transcript)
        self.code = code


class ModbusBusy(DeviceRefused):
    """The device answered with a busy / failure exception code."""

    def __init__(self, code: int, what: str, fix: str, transcript: list[str]) -> None:
        super().__init__(what, fix, transcript)
        self.code = code


def exception_line(code: int) -> str:
    return f"< exception {code} ({EXCEPTION_NAMES.get(code, 'unknown exception')})"


def exception_error(code: int, who: str, setting: str, transcript: list[str]) -> ProtocolError | DeviceRefused:
    """The error for exception ``code`` answered by ``who`` ("unit 1 on tcp://...")."""
    what = f"{who} answered Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown exception')})"
    if code in BUSY_CODES:
        return ModbusBusy(code, what, "the device is busy or faulty; wait and retry, or check its display",
                          transcript)
    return ModbusExceptionReply(
        code, what,
        f"the register map does not fit this device: check the map's register numbers and the unit id ({setting})",
        transcript,
    )


_HEX = "0x{:04x}".format


def hexwords(regs: Sequence[int]) -> str:
    return "[" + ", ".join(map(_HEX, regs)) + "]"


def shown(entry: str | tuple) -> str:
    """History entries are kept raw on the hot path and formatted when read."""
    if isinstance(entry, str):
        return entry
    if entry[0] == "<":
        return f"< {hexwords(entry[1])}"
    _, fc, unit, address, count, values = entry
    if values is None:
        return f"> FC{fc:02d} @{unit} addr {address} x{count}"
    return f"> FC{fc:02d} @{unit} addr {address} = {hexwords(values)}"
