"""Sartorius balances with the SBI print protocol over serial.

Defaults are Sartorius' old factory framing, 1200 baud 7O1 with RTS/CTS; many
newer models ship with 9600 8N1: set what the balance's menu says.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from station.instruments.plugins.base import DeviceConfig, PositiveInt, SerialFraming, serial_link


class SbiConfig(DeviceConfig, SerialFraming):
    kind: Literal["scale"]
    driver: Literal["sbi"]
    baudrate: PositiveInt = 1200
    bytesize: Literal[7, 8] = 7
    parity: Literal["N", "E", "O"] = "O"
    rtscts: bool = True
    identify: bool = True  # ESC x1_/x2_ (model, serial); old models without them: false
    tare_command: Literal["U", "T"] = "U"  # ESC U tares; some models only know ESC T
    stable_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


def build(name: str, cfg: SbiConfig):
    from drivers.sbi import SbiBalance

    return SbiBalance(
        serial_link(name, cfg, cfg.reply_timeout_s),
        expected_serial=cfg.serial,
        serial_setting=f"devices.{name}.serial in the config",
        framing_setting=f"devices.{name}.baudrate, bytesize, parity and rtscts in the config",
        identify_setting=f"devices.{name}.identify in the config",
        identify=cfg.identify,
        tare_command=cfg.tare_command.encode(),
        reply_timeout=cfg.reply_timeout_s,
        stable_timeout=cfg.stable_timeout_s,
    )
