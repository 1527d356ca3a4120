"""A Modbus RTU temperature/humidity sensor (pty or RTU over TCP).

``AmbientRegisters`` is the sensor's register bank and state; it can sit on
its own wire (:class:`AmbientSimulator`) or on a simulated scale's bus
(``ModbusScaleSimulator(extra_units={2: sensor.bank()})``) to simulate two
devices on one RS-485 bus.

Control words (``station sim control``): ``temp C`` (e.g. ``temp 21.5``),
``humidity RH``, ``unplug``, ``replug``, ``fault crc|noreply|exception``,
``fault timeout S``, ``fault stale`` (the sensor hangs and stops answering
until ``clear``), ``clear``, ``status``.
"""

from __future__ import annotations

import threading
from decimal import Decimal, InvalidOperation

from drivers.modbus_codes import FC_READ_HOLDING, FC_READ_INPUT
from drivers.regdecode import encode_ambient
from drivers.regmap import AmbientRegisterMap, load_map
from drivers.sim import control
from drivers.sim.lifecycle import SimulatedDevice
from drivers.sim.modbus_wire import ModbusWire

__all__ = ["AmbientRegisters", "AmbientSimulator"]

_STALE_S = 10 ** 9  # "until clear"


def _tenths(text: str) -> int:
    try:
        v = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    scaled = v * 10
    if not scaled.is_finite() or scaled != scaled.to_integral_value():
        raise ValueError(f"{text} has more than one decimal")
    return int(scaled)


class AmbientRegisters:
    def __init__(self, regmap: AmbientRegisterMap | str = "ambient-sht20", *,
                 temperature_dc: int = 215, humidity_dpct: int = 450) -> None:
        self.map = load_map(regmap, "ambient") if isinstance(regmap, str) else regmap
        self._lock = threading.Lock()
        self.temperature_dc, self.humidity_dpct = temperature_dc, humidity_dpct

    def set(self, *, temperature_dc: int | None = None, humidity_dpct: int | None = None) -> None:
        with self._lock:
            if temperature_dc is not None:
                self.temperature_dc = temperature_dc
            if humidity_dpct is not None:
                if not 0 <= humidity_dpct <= 1000:
                    raise ValueError("humidity must be 0..100 %RH")
                self.humidity_dpct = humidity_dpct

    def bank(self) -> tuple[int, object]:
        size = max(f.address for f in (self.map.temperature, self.map.humidity)) + 1
        return size, self.access

    def access(self, unit, fc, address, count, registers, written):
        if fc not in (FC_READ_HOLDING, FC_READ_INPUT):
            return 1  # the sensor is read-only: illegal function
        with self._lock:
            regs = encode_ambient(self.map, self.temperature_dc, self.humidity_dpct)
        for (_, a), v in regs.items():
            registers[a] = v
        return None


class AmbientSimulator(AmbientRegisters, SimulatedDevice):
    def __init__(self, regmap: AmbientRegisterMap | str = "ambient-sht20", *, unit_id: int = 1,
                 temperature_dc: int = 215, humidity_dpct: int = 450,
                 link_path: str | None = None, tcp: tuple[str, int] | None = None) -> None:
        super().__init__(regmap, temperature_dc=temperature_dc, humidity_dpct=humidity_dpct)
        self.unit_id, self.serial = unit_id, f"unit {unit_id}"
        size, hook = self.bank()
        self._wire = ModbusWire({unit_id: size}, hook, framing="rtu", link_path=link_path, tcp=tcp,
                                name="ambient-sim")

    def inject(self, kind: str, seconds: float | None = None) -> None:
        if kind == "stale" and seconds is None:
            self._wire.inject("timeout", _STALE_S)
        else:
            self._wire.inject(kind, seconds)

    def clear_faults(self) -> None:
        self._wire.clear_faults()

    def status(self) -> dict:
        return {"port": self.port, "serial": self.serial, "plugged": self.plugged,
                "temperature_c": str(Decimal(self.temperature_dc).scaleb(-1)),
                "humidity_pct": str(Decimal(self.humidity_dpct).scaleb(-1))}

    def control(self, line: str) -> dict:
        name, *args = line.split() or [""]
        try:
            if name == "temp" and len(args) == 1:
                self.set(temperature_dc=_tenths(args[0]))
                return {"ok": True}
            if name == "humidity" and len(args) == 1:
                self.set(humidity_dpct=_tenths(args[0]))
                return {"ok": True}
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        if name in ("place", "remove", "noise", "drift"):
            return {"ok": False, "error": f"an ambient sensor has no {name!r}; use temp C, humidity RH, "
                                          "fault crc|noreply|exception|stale, fault timeout S, unplug, replug, clear, status"}
        return control.run_command(self, line)
