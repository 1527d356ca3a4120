"""A Modbus weight transmitter (RTU on a pty, RTU over TCP, or Modbus TCP).

The registers come from the shared pan physics through a register map
(Laumas, Flintec, the generic float32 map, or any map file): every read
re-encodes the current display, and a write of the map's zero or tare code to
its command register zeroes or tares the pan. Faults are the wire's
(``drivers/sim/modbus_wire.py``): ``crc``, ``noreply``, ``exception``,
``timeout S``, plus unplug/replug, and ``loadcell``: the status error bit stays
set until ``clear`` (maps with an ``error`` bit, e.g. Laumas).
"""

from __future__ import annotations

from drivers.modbus_codes import FC_READ_HOLDING, FC_READ_INPUT, FC_WRITE_MULTIPLE, FC_WRITE_SINGLE
from drivers.regdecode import encode_scale
from drivers.regmap import ScaleRegisterMap, load_map
from drivers.sim.modbus_wire import ModbusWire
from drivers.sim.scale_physics import CAPACITY_UG, ScalePhysics, ScaleSimulator

__all__ = ["ModbusScaleSimulator", "bank_size"]

_DECIMALS = 4  # what a transmitter with a dynamic decimal point reports (0.1 mg in g)


def bank_size(m: ScaleRegisterMap) -> int:
    """Registers 0..N-1 cover every register the map names."""
    ends = [a + 1 for _, a in m.fields()]
    for reg in (m.command, ):
        if reg is not None:
            ends.append(reg.address + 1)
    if m.serial is not None:
        ends.append(m.serial.address + m.serial.count)
    return max(ends)


class ModbusScaleSimulator(ScaleSimulator):
    def __init__(
        self,
        *,
        regmap: ScaleRegisterMap | str = "generic-float32",
        framing: str = "rtu",
        unit_id: int = 1,
        serial: str = "SIM0000001",
        readability_ug: int = 100,
        settle_s: float = 0.5,
        noise_ug: int = 0,
        motion_noise_ug: int = 2000,
        drift_ug_per_s: float = 0,
        capacity_ug: int = CAPACITY_UG,
        link_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        seed: int | None = None,
        extra_units: dict[int, tuple[int, object]] | None = None,
    ) -> None:
        self.map = load_map(regmap) if isinstance(regmap, str) else regmap
        self.physics = ScalePhysics(
            readability_ug=readability_ug, settle_s=settle_s, noise_ug=noise_ug,
            motion_noise_ug=motion_noise_ug, drift_ug_per_s=drift_ug_per_s,
            capacity_ug=capacity_ug, seed=seed,
        )
        self.serial, self.unit_id = serial, unit_id
        self.writes: list[tuple[int, list[int]]] = []  # command writes seen, for tests
        self._loadcell_error = False
        # Other devices on the same simulated bus: unit -> (bank size, on_access).
        self._extra = dict(extra_units or {})
        banks = {unit_id: bank_size(self.map), **{u: n for u, (n, _) in self._extra.items()}}
        self._init_wire(ModbusWire(banks, self._access, framing=framing, link_path=link_path,
                                   tcp=tcp, name="modbus-scale-sim"))

    @property
    def wire(self) -> ModbusWire:
        return self._wire

    # -- faults (control port) ------------------------------------------------

    def inject(self, kind: str, seconds: float | None = None) -> None:
        if kind == "loadcell" and seconds is None:
            self._loadcell_error = True  # until clear, on maps with an error bit
            return
        try:
            self._wire.inject(kind, seconds)
        except ValueError as e:
            raise ValueError(f"{e}; or loadcell") from None

    def clear_faults(self) -> None:
        self._loadcell_error = False
        self._wire.clear_faults()

    # -- registers (server thread) --------------------------------------------

    def registers(self) -> dict[tuple[str, int], int]:
        """The transmitter's registers right now, keyed by (table, address)."""
        value, stable = self.physics.reading()
        out = self.physics.range_state()
        regs = encode_scale(self.map, value, stable=stable, overload=out == "+",
                            underload=out == "-", error=self._loadcell_error, decimals=_DECIMALS)
        s = self.map.serial
        if s is not None:
            if s.format == "ascii":
                data = self.serial.encode("ascii")[: 2 * s.count].ljust(2 * s.count, b"\0")
                words = [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
            else:
                n = int(self.serial) if self.serial.isdigit() else 0
                words = [(n >> (16 * (s.count - 1 - i))) & 0xFFFF for i in range(s.count)]
            for i, w in enumerate(words):
                regs[(s.table, s.address + i)] = w
        return regs

    def _access(self, unit, fc, address, count, registers, written):
        if unit != self.unit_id:
            _, hook = self._extra[unit]
            return hook(unit, fc, address, count, registers, written)
        if fc in (FC_READ_HOLDING, FC_READ_INPUT):
            table = "holding" if fc == FC_READ_HOLDING else "input"
            for (t, a), v in self.registers().items():
                if t == table:
                    registers[a] = v
            return None
        if fc in (FC_WRITE_SINGLE, FC_WRITE_MULTIPLE) and written:
            self.writes.append((address, list(written)))
            c = self.map.command
            if c is not None and address == c.address:
                if written[0] == c.zero:
                    self.physics.zero()
                elif written[0] == c.tare:
                    self.physics.tare()
                else:
                    return 3  # illegal data value: an unknown command code
        return None
