"""What each kind of instrument offers, whatever its protocol.

A driver implements one of these protocols; the station adapts it into
readings (``station/instruments/``). Values are exact: masses in integer µg,
ambient in scaled integers. ``raw`` keeps the lines (or registers) exchanged
for the value, for the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Identity:
    model: str
    serial: str
    raw: tuple[str, ...] = ()


@dataclass(frozen=True)
class Weight:
    value_ug: int
    stable: bool
    unit: str  # the unit the device sent ("g", "ct", or "reg" for registers)
    raw: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.value_ug, int) or isinstance(self.value_ug, bool):
            raise TypeError("value_ug must be an integer number of micrograms")


@dataclass(frozen=True)
class AmbientSample:
    temperature_dc: int  # °C × 10
    humidity_dpct: int  # %RH × 10
    raw: tuple[str, ...]


@runtime_checkable
class Scale(Protocol):
    def identify(self) -> Identity:
        """Open the link if needed and identify the device (serial number checked)."""
        ...

    def recover(self) -> Identity:
        """Reopen the link and prove it is the same device (by serial number)."""
        ...

    def weigh_now(self) -> Weight: ...
    def weigh_stable(self) -> Weight: ...
    def zero(self) -> None: ...
    def tare(self) -> None: ...
    def close(self) -> None: ...


@runtime_checkable
class AmbientSensor(Protocol):
    def identify(self) -> Identity: ...
    def recover(self) -> Identity: ...
    def read(self) -> AmbientSample: ...
    def close(self) -> None: ...


@runtime_checkable
class Spectrometer(Protocol):
    """A CCD spectrometer. ``acquire`` returns raw counts per pixel (a 1-D
    numpy integer array of ``pixel_count``), the average of ``scans`` scans;
    dark frames are taken with the excitation lamp off (``set_lamp``).
    Wavelength coefficients c0..c3 give λ(px) = c0 + c1·px + c2·px² + c3·px³ in nm,
    as stored in the instrument by its maker (the station recalibrates)."""

    pixel_count: int
    max_counts: int  # ADC full scale

    def identify(self) -> Identity: ...
    def recover(self) -> Identity: ...
    def wavelength_coefficients(self) -> tuple[float, ...]: ...
    def set_integration_us(self, us: int) -> None: ...
    def set_scans(self, n: int) -> None: ...
    def set_lamp(self, on: bool) -> None: ...
    def acquire(self): ...
    def close(self) -> None: ...


@runtime_checkable
class Camera(Protocol):
    """Filled in by the camera work: capture returns an image artifact."""

    def identify(self) -> Identity: ...
    def recover(self) -> Identity: ...
    def close(self) -> None: ...
