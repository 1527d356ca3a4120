"""An RS-485 Modbus RTU temperature/humidity sensor as a :class:`drivers.kinds.AmbientSensor`.

Values are exact scaled integers (°C × 10, %RH × 10) decoded by
``drivers/regmap.py`` from input registers (FC04) by default. The sensor may
share its RS-485 bus with a Modbus scale: both then use one
:class:`~drivers.modbus_link.ModbusLink` (``shared_link``), one request at a time.
Cheap sensors have no serial number, so the identity is the map's name and the
unit id.
"""

from __future__ import annotations

from drivers.errors import ProtocolError
from drivers.kinds import AmbientSample, Identity
from drivers.modbus_link import ModbusLink
from drivers.modbus_scale import read_blocks
from drivers.regdecode import decode_ambient
from drivers.regmap import AmbientRegisterMap, load_map

__all__ = ["ModbusAmbientSensor", "DEFAULT_MAP"]

DEFAULT_MAP = "ambient-sht20"


class ModbusAmbientSensor:
    def __init__(self, link: ModbusLink, regmap: AmbientRegisterMap | str = DEFAULT_MAP, *,
                 unit_id: int = 1) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit_id must be 1..247, got {unit_id}")
        self.link, self.unit_id = link, unit_id
        self.map = load_map(regmap, "ambient") if isinstance(regmap, str) else regmap
        self._reads = self.map.reads()
        self._holding = False
        self.identity: Identity | None = None

    def identify(self) -> Identity:
        if not self._holding:
            self.link.open()
            self._holding = True
        sample = self.read()  # a sensor that answers with plausible values is there
        self.identity = Identity(model=self.map.name, serial=f"unit {self.unit_id}", raw=sample.raw)
        return self.identity

    def recover(self) -> Identity:
        if self._holding:
            self.link.reopen()
        return self.identify()

    def read(self) -> AmbientSample:
        regs, raw = read_blocks(self.link, self.unit_id, self._reads)
        try:
            v = decode_ambient(self.map, regs)
        except ProtocolError as e:
            raise ProtocolError(e.what, e.fix, self.link.transcript()) from None
        return AmbientSample(v.temperature_dc, v.humidity_dpct, raw)

    def close(self) -> None:
        if self._holding:
            self._holding = False
            self.link.close()
