"""Modbus devices from plain settings: what a config entry turns into.

One function per device kind, so the station's driver registry needs one line
each. Devices given the same ``port`` share one :class:`ModbusLink` (one RS-485
bus, one request at a time); their bus settings must then agree. ``setting``
is where the user sets this device (``"devices.scale"``): every fix hint names
the key to change under it.
"""

from __future__ import annotations

from drivers.ambient import DEFAULT_MAP as AMBIENT_MAP
from drivers.ambient import ModbusAmbientSensor
from drivers.errors import LinkError
from drivers.modbus_link import ModbusLink, shared_link
from drivers.modbus_scale import ModbusScale
from drivers.regmap import load_map

__all__ = ["modbus_scale", "modbus_ambient", "DRIVERS"]

DRIVERS = ("modbus-rtu", "modbus-tcp")


def _link(driver: str, port: str, setting: str, *, baudrate: int, parity: str, stopbits: int,
          timeout_s: float, gap_ms: int) -> ModbusLink:
    if driver not in DRIVERS:
        raise ValueError(f"unknown Modbus driver {driver!r}; use one of {', '.join(DRIVERS)}")
    is_tcp = port.startswith("tcp://")
    if (driver == "modbus-tcp") != is_tcp:
        want = "tcp://HOST:PORT" if driver == "modbus-tcp" else "a serial device path or socket://HOST:PORT"
        raise LinkError(f"{setting}.driver is {driver!r} but {setting}.port is {port!r}",
                        f"set {setting}.port to {want}, or change {setting}.driver")
    return shared_link(port, baudrate=baudrate, parity=parity, stopbits=stopbits, timeout=timeout_s,
                       gap_s=gap_ms / 1000, setting=f"{setting}.port")


def modbus_scale(port: str, *, driver: str = "modbus-rtu", unit_id: int = 1, map: str = "generic-float32",
                 baudrate: int = 9600, parity: str = "N", stopbits: int = 1, timeout_s: float = 1.0,
                 gap_ms: int = 0, stable_timeout_s: float = 10.0, expected_serial: str | None = None,
                 setting: str = "devices.scale") -> ModbusScale:
    link = _link(driver, port, setting, baudrate=baudrate, parity=parity, stopbits=stopbits,
                 timeout_s=timeout_s, gap_ms=gap_ms)
    return ModbusScale(link, load_map(map), unit_id=unit_id, expected_serial=expected_serial,
                       serial_setting=f"{setting}.serial", stable_timeout=stable_timeout_s)


def modbus_ambient(port: str, *, driver: str = "modbus-rtu", unit_id: int = 1, map: str = AMBIENT_MAP,
                   baudrate: int = 9600, parity: str = "N", stopbits: int = 1, timeout_s: float = 1.0,
                   gap_ms: int = 0, setting: str = "devices.ambient") -> ModbusAmbientSensor:
    link = _link(driver, port, setting, baudrate=baudrate, parity=parity, stopbits=stopbits,
                 timeout_s=timeout_s, gap_ms=gap_ms)
    return ModbusAmbientSensor(link, load_map(map, "ambient"), unit_id=unit_id)
