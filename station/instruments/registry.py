"""Driver name → plug-in. Adding an instrument is one line here (plus its
driver, simulator and plug-in module); see docs/DEVICES.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from station.instruments.plugins import modbus, mtsics, sbi, spectro


@dataclass(frozen=True)
class Plugin:
    kind: str  # scale, ambient, spectrometer, camera
    config: type[BaseModel]
    build: Callable[[str, Any], Any]  # (device name, config) -> driver implementing drivers.kinds.<Kind>
    summary: str


PLUGINS: dict[str, Plugin] = {
    "mtsics": Plugin("scale", mtsics.MtSicsConfig, mtsics.build, "Mettler Toledo MT-SICS balance (serial)"),
    "sbi": Plugin("scale", sbi.SbiConfig, sbi.build, "Sartorius balance, SBI print protocol (serial)"),
    "modbus-rtu": Plugin("scale", modbus.ModbusScaleConfig, modbus.build_scale, "weight transmitter, Modbus RTU"),
    "modbus-tcp": Plugin("scale", modbus.ModbusScaleConfig, modbus.build_scale, "weight transmitter, Modbus TCP"),
    "modbus-ambient": Plugin("ambient", modbus.ModbusAmbientConfig, modbus.build_ambient,
                             "temperature/humidity sensor, Modbus RTU (or TCP)"),
    "spectro-serial": Plugin("spectrometer", spectro.SpectroSerialConfig, spectro.build_serial,
                             "CCD spectrometer, RS-232 command set (serial)"),
    "spectro-modbus": Plugin("spectrometer", spectro.SpectroModbusConfig, spectro.build_modbus,
                             "CCD spectrometer behind a Modbus front-end (RTU or TCP)"),
}

KINDS = ("scale", "ambient", "spectrometer", "camera")


def plugin_for(driver: str) -> Plugin:
    return PLUGINS[driver]
