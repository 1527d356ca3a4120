"""Driver name → plug-in. Adding an instrument is one line here (plus its
driver, simulator and plug-in module); see docs/DEVICES.md."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from station.instruments.plugins import mtsics


@dataclass(frozen=True)
class Plugin:
    kind: str  # scale, ambient, spectrometer, camera
    config: type[BaseModel]
    build: Callable[[str, Any], Any]  # (device name, config) -> driver implementing drivers.kinds.<Kind>
    summary: str


PLUGINS: dict[str, Plugin] = {
    "mtsics": Plugin("scale", mtsics.MtSicsConfig, mtsics.build, "Mettler Toledo MT-SICS balance (serial)"),
}

KINDS = ("scale", "ambient", "spectrometer", "camera")


def plugin_for(driver: str) -> Plugin:
    return PLUGINS[driver]
