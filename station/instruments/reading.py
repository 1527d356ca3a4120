"""What a driver hands the cycle: a typed, exact reading with the raw lines behind it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceIdentity:
    model: str
    serial: str
    raw: tuple[str, ...] = ()

    def to_cbor(self) -> dict:
        return {"model": self.model, "serial": self.serial, "raw": list(self.raw)}


@dataclass(frozen=True)
class MassReading:
    device: str  # the config's name for it, e.g. "balance"
    driver: str  # e.g. "mtsics"
    identity: DeviceIdentity
    value_ug: int
    stable: bool
    raw: tuple[str, ...]  # the lines exchanged for this reading, "> S", "< S S      0.0998 g"
    time: str  # RFC 3339 UTC

    def __post_init__(self) -> None:
        if not isinstance(self.value_ug, int) or isinstance(self.value_ug, bool):
            raise TypeError("value_ug must be an integer number of micrograms")
