"""What an instrument hands the stone session: one typed, exact reading with
the raw exchange behind it.

A reading holds either an exact value (integer µg for mass; scaled integers
elsewhere: ``value × 10^scale`` in ``unit``) or a reference to an artifact
stored next to the outbox (a spectrum, an image), never both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class DeviceIdentity:
    model: str
    serial: str
    raw: tuple[str, ...] = ()

    def to_cbor(self) -> dict:
        return {"model": self.model, "serial": self.serial, "raw": list(self.raw)}


@dataclass(frozen=True)
class ArtifactRef:
    sha256: bytes
    media_type: str
    size: int
    name: str  # file name under the state dir's artifacts/ folder

    def to_cbor(self) -> dict:
        return {"sha256": self.sha256, "media_type": self.media_type, "size": self.size, "name": self.name}


@dataclass(frozen=True)
class Reading:
    device: str  # the config's name for it, e.g. "scale"
    kind: str  # scale, ambient, spectrometer, camera
    driver: str  # e.g. "mtsics"
    identity: DeviceIdentity
    quantity: str  # mass, temperature, relative_humidity, spectrum, image
    unit: str  # ug, Cel, %RH ...
    time: str  # RFC 3339 UTC
    raw: tuple[str, ...]  # the lines exchanged for this reading, "> S", "< S S      0.0998 g"
    value: int | None = None
    scale: int = 0  # decimal exponent: the quantity is value × 10^scale unit
    artifact: ArtifactRef | None = None
    stable: bool | None = None
    # What an analysis made of it, deterministic-CBOR-able (a spectrum's
    # fingerprint, peak table and screening verdict); signed with the record.
    details: dict | None = None
    note: str = ""  # one line for the operator, e.g. "screening PASS"

    def __post_init__(self) -> None:
        if (self.value is None) == (self.artifact is None):
            raise ValueError("a reading holds exactly one of value or artifact")
        if self.value is not None and (not isinstance(self.value, int) or isinstance(self.value, bool)):
            raise TypeError("reading values are exact integers (µg, or scaled integers)")

    @property
    def value_ug(self) -> int:
        """The mass in µg; only for mass readings."""
        if self.quantity != "mass" or self.value is None:
            raise TypeError(f"{self.device} reading is {self.quantity}, not a mass")
        return self.value


@dataclass(frozen=True)
class AmbientStatus:
    """What goes into a record's ``ambient`` field."""

    status: str  # ok, stale, missing
    message: str = ""
    temperature_dc: int | None = None
    humidity_dpct: int | None = None
    device: str = ""
    identity: DeviceIdentity | None = None
    time: str | None = None
    raw: tuple[str, ...] = ()


def mass_reading(
    device: str, driver: str, identity: DeviceIdentity, value_ug: int, stable: bool, raw: tuple[str, ...], time: str
) -> Reading:
    return Reading(device=device, kind="scale", driver=driver, identity=identity, quantity="mass", unit="ug",
                   value=value_ug, stable=stable, raw=raw, time=time)
