"""Spectrometers: the RS-232 command subset and the Modbus front-end (docs/DEVICES.md)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from station.instruments.plugins.base import DeviceConfig, PositiveInt, SerialFraming, Strict, serial_link


class SpectroSettings(Strict):
    """What the spectrometer step needs besides the link (station/instruments/spectro_step.py)."""

    laser_nm: Annotated[float, Field(ge=300, le=800)] = 405.0  # the probe's excitation laser
    scans: Annotated[int, Field(ge=1, le=100)] = 4  # averaged for the stone (and again for the dark frame)


class SpectroSerialConfig(DeviceConfig, SerialFraming, SpectroSettings):
    kind: Literal["spectrometer"]
    driver: Literal["spectro-serial"]
    # A 2048-pixel block is 4113 bytes: 0.36 s at 115200, 2.1 s at 19200.
    baudrate: PositiveInt = 115200
    ascii_transfer: bool = False  # spectra as text lines, for debugging with a terminal


class SpectroModbusConfig(DeviceConfig, SpectroSettings):
    kind: Literal["spectrometer"]
    driver: Literal["spectro-modbus"]
    # tcp://host:port (Modbus TCP), socket://host:port (RTU frames over TCP),
    # or a serial device such as /dev/serial/by-id/... (RTU on RS-485).
    port: Annotated[str, Field(min_length=1)]
    unit_id: Annotated[int, Field(ge=1, le=247)] = 1
    baudrate: PositiveInt = 19200
    parity: Literal["N", "E", "O"] = "N"


def build_serial(name: str, cfg: SpectroSerialConfig):
    from drivers.spectro_serial import SerialSpectrometer

    return SerialSpectrometer(
        serial_link(name, cfg, cfg.reply_timeout_s),
        expected_serial=cfg.serial,
        serial_setting=f"devices.{name}.serial in the config",
        reply_timeout=cfg.reply_timeout_s,
        ascii_transfer=cfg.ascii_transfer,
    )


def build_modbus(name: str, cfg: SpectroModbusConfig):
    from drivers.modbus_link import shared_link
    from drivers.spectro_modbus import ModbusSpectrometer

    # Devices given the same port share one link: one RS-485 bus, one request at a time.
    link = shared_link(cfg.port, timeout=cfg.reply_timeout_s, baudrate=cfg.baudrate, parity=cfg.parity,
                       setting=f"devices.{name}.port in the config")
    return ModbusSpectrometer(link, unit_id=cfg.unit_id, expected_serial=cfg.serial,
                              serial_setting=f"devices.{name}.serial in the config",
                              reply_timeout=cfg.reply_timeout_s)
