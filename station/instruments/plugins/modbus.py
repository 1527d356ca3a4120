"""Modbus instruments: weight transmitters (RTU or TCP) and RS-485
temperature/humidity sensors. Devices on the same ``port`` share one bus,
one request at a time (drivers/modbus_link.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from station.instruments.plugins.base import DeviceConfig, PositiveInt, Strict


class ModbusBus(Strict):
    # tcp://host:port (Modbus TCP), socket://host:port (RTU frames over TCP),
    # or a serial device such as /dev/serial/by-id/... (RTU on RS-485).
    port: Annotated[str, Field(min_length=1)]
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1
    baudrate: PositiveInt = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    gap_ms: Annotated[int, Field(ge=0, le=1000)] = 0  # silence between requests; RS-485 adapters may need 20-100
    map: Annotated[str, Field(min_length=1)]  # a map under config/regmaps/ by name, or an absolute .toml path


class ModbusScaleConfig(DeviceConfig, ModbusBus):
    kind: Literal["scale"]
    driver: Literal["modbus-rtu", "modbus-tcp"]
    map: Annotated[str, Field(min_length=1)] = "generic-float32"
    stable_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class ModbusAmbientConfig(DeviceConfig, ModbusBus):
    kind: Literal["ambient"]
    driver: Literal["modbus-ambient"]
    map: Annotated[str, Field(min_length=1)] = "ambient-sht20"
    required: bool = False  # true: a stale or missing sensor blocks measuring instead of a warning
    max_age_s: Annotated[float, Field(gt=0, le=3600)] = 300.0  # a failed read may reuse a reading this old


def _bus(name: str, cfg: ModbusBus) -> dict:
    return dict(unit_id=cfg.unit_id, map=cfg.map, baudrate=cfg.baudrate, parity=cfg.parity,
                stopbits=cfg.stopbits, gap_ms=cfg.gap_ms, setting=f"devices.{name}")


def build_scale(name: str, cfg: ModbusScaleConfig):
    from drivers.modbus_devices import modbus_scale

    return modbus_scale(cfg.port, driver=cfg.driver, timeout_s=cfg.reply_timeout_s,
                        stable_timeout_s=cfg.stable_timeout_s, expected_serial=cfg.serial, **_bus(name, cfg))


def build_ambient(name: str, cfg: ModbusAmbientConfig):
    from drivers.modbus_devices import modbus_ambient

    driver = "modbus-tcp" if cfg.port.startswith("tcp://") else "modbus-rtu"
    return modbus_ambient(cfg.port, driver=driver, timeout_s=cfg.reply_timeout_s, **_bus(name, cfg))
