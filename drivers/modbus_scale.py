"""A Modbus weight transmitter (RTU or TCP) as a :class:`drivers.kinds.Scale`.

The register map (``drivers/regmap.py``) says where the weight, status bits,
command register and serial number are; this module only reads, decodes and
turns flags into operator-grade refusals. ``Weight.raw`` keeps every block of
registers read for the value, in vendor notation
(``< 40007..40011 = [0x0800, 0x0000, 0x0000, 0x0001, 0x86a0]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers.errors import DeviceRefused, LinkError, ProtocolError
from drivers.identify import check_serial
from drivers.kinds import Identity, Weight
from drivers.modbus_link import ModbusLink
from drivers.regdecode import ScaleDecoder
from drivers.regmap import FIX_MAP, ScaleRegisterMap

__all__ = ["ModbusScale", "read_blocks", "block_line", "decode_serial"]


_HEX = "0x{:04x}".format


def block_line(table: str, address: int, regs: list[int]) -> str:
    first = (40001 if table == "holding" else 30001) + address
    span = f"{first}..{first + len(regs) - 1}" if len(regs) > 1 else f"{first}"
    return f"< {span} = [{', '.join(map(_HEX, regs))}]"


def read_blocks(link: ModbusLink, unit: int, reads: list[tuple[str, int, int]]
                ) -> tuple[dict[tuple[str, int], int], tuple[str, ...]]:
    """Read each (table, address, count) block; registers keyed by (table, address)."""
    regs: dict[tuple[str, int], int] = {}
    raw: list[str] = []
    for table, address, count in reads:
        read = link.read_holding if table == "holding" else link.read_input
        values = read(unit, address, count)
        for i, v in enumerate(values, address):
            regs[(table, i)] = v
        raw.append(block_line(table, address, values))
    return regs, tuple(raw)


def decode_serial(fmt: str, regs: list[int]) -> str:
    if fmt == "ascii":
        data = b"".join(r.to_bytes(2, "big") for r in regs).rstrip(b"\0 ")
        if not data or any(not 0x20 <= b < 0x7F for b in data):
            raise ProtocolError(f"the serial-number registers hold {data!r}, not printable text", FIX_MAP)
        return data.decode("ascii")
    value = 0
    for r in regs:
        value = (value << 16) | r
    return str(value)


class ModbusScale:
    def __init__(
        self,
        link: ModbusLink,
        regmap: ScaleRegisterMap,
        *,
        unit_id: int = 1,
        expected_serial: str | None = None,
        serial_setting: str = "the expected serial number in the config",
        stable_timeout: float = 10.0,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id must be 1..247, got {unit_id}")
        if expected_serial is not None and regmap.serial is None:
            raise ValueError(f"the register map {regmap.name!r} has no serial-number registers; "
                             "drop the expected serial or add [serial] to the map")
        self.link, self.map, self.unit_id = link, regmap, unit_id
        self.expected_serial, self.serial_setting = expected_serial, serial_setting
        self.stable_timeout, self.poll_s = stable_timeout, poll_s
        self._clock, self._sleep = clock, sleep
        self._reads = regmap.reads()
        self._decoder = ScaleDecoder(regmap)
        self._holding = False  # whether this driver counts as a user of the shared link
        self._identified = False
        self.identity: Identity | None = None

    # -- session -----------------------------------------------------------

    def identify(self) -> Identity:
        if not self._holding:
            self.link.open()
            self._holding = True
        return self._check_identity()

    def recover(self) -> Identity:
        """Reopen the bus and prove the same transmitter answers (by serial number)."""
        if not self._holding:
            return self.identify()
        self._identified = False
        self.link.reopen()
        return self._check_identity()

    def close(self) -> None:
        self._identified = False
        if self._holding:
            self._holding = False
            self.link.close()

    def __enter__(self) -> ModbusScale:
        self.identify()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_identity(self) -> Identity:
        # Until this passes, nothing is weighed: on a bus another device keeps
        # open, the wrong transmitter would otherwise answer the next poll.
        self._identified = False
        s = self.map.serial
        if s is None:
            # Nothing to tell two transmitters apart: prove one answers at this unit id.
            _, raw = read_blocks(self.link, self.unit_id, self._reads)
            ident = Identity(model=self.map.name, serial=f"unit {self.unit_id}", raw=raw)
        else:
            regs, raw = read_blocks(self.link, self.unit_id, [(s.table, s.address, s.count)])
            try:
                serial = decode_serial(s.format, [regs[(s.table, s.address + i)] for i in range(s.count)])
            except ProtocolError as e:
                raise ProtocolError(e.what, e.fix, self.link.transcript()) from None
            ident = Identity(model=self.map.name, serial=serial, raw=raw)
        check_serial(self, ident.serial, device="transmitter", plug="scale", where=f" at unit {self.unit_id}")
        if self.identity is None:
            self.identity = ident
        self._identified = True
        return ident

    def _require_identity(self) -> None:
        raise LinkError(
            f"the scale at unit {self.unit_id} on {self.link.url} is not identified",
            "the station reconnects automatically; if it repeats, check which transmitter is connected",
            transcript=self.link.transcript(),
        )

    # -- weighing ----------------------------------------------------------

    def weigh_now(self) -> Weight:
        if not self._identified:
            self._require_identity()
        words: list[int] = []
        raw = []
        for table, address, count in self._reads:
            read = self.link.read_holding if table == "holding" else self.link.read_input
            values = read(self.unit_id, address, count)
            words += values
            raw.append(block_line(table, address, values))
        try:
            r = self._decoder.decode_flat(words)
        except ProtocolError as e:
            raise ProtocolError(e.what, e.fix, self.link.transcript()) from None
        if r.error:
            self._refuse("reports a load-cell error",
                         "check the load-cell cable and the transmitter's display")
        if r.overload:
            self._refuse("reports overload",
                         "remove the load; the stone is above capacity (or zero range exceeded)")
        if r.underload:
            self._refuse("reports underload", "put the pan back and zero the scale")
        # "reg": the value came from registers (drivers.kinds.Weight); the map's
        # display unit is in the map, and the registers themselves in raw.
        return Weight(r.value_ug, r.stable, "reg", tuple(raw))

    def weigh_stable(self) -> Weight:
        deadline = self._clock() + self.stable_timeout
        while True:
            w = self.weigh_now()
            if w.stable:
                return w
            if self._clock() >= deadline:
                raise DeviceRefused(
                    f"the scale was not stable within {self.stable_timeout:g} s",
                    "close the draft shield, keep the desk still, and weigh again",
                    self.link.transcript(),
                )
            self._sleep(self.poll_s)

    def zero(self) -> None:
        self._command("zero")

    def tare(self) -> None:
        self._command("tare")

    def _command(self, which: str) -> None:
        c = self.map.command
        if c is None:
            raise DeviceRefused(
                f"the register map {self.map.name!r} has no command register, so the station cannot {which}",
                f"{which} on the transmitter's keypad, or add [command] to the register map",
                self.link.transcript(),
            )
        if not self._identified:
            self._require_identity()
        code = c.zero if which == "zero" else c.tare
        if c.table != "holding":
            raise ProtocolError(f"the command register {c.number} is not a holding register", FIX_MAP)
        self.link.write_register(self.unit_id, c.address, code)

    def _refuse(self, what: str, fix: str):
        raise DeviceRefused(f"the scale {what}", fix, self.link.transcript())
