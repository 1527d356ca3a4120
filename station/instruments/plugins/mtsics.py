"""Mettler Toledo MT-SICS balance over serial (host default 9600 8N1, no handshake)."""

from __future__ import annotations

from typing import Literal

from station.instruments.plugins.base import DeviceConfig, SerialFraming, serial_link


class MtSicsConfig(DeviceConfig, SerialFraming):
    kind: Literal["scale"]
    driver: Literal["mtsics"]


def build(name: str, cfg: MtSicsConfig):
    from drivers.mtsics import MtSicsBalance

    return MtSicsBalance(
        serial_link(name, cfg, cfg.reply_timeout_s),
        expected_serial=cfg.serial,
        serial_setting=f"devices.{name}.serial in the config",
        reply_timeout=cfg.reply_timeout_s,
    )
