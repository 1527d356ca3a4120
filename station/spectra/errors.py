"""Errors of the spectral processing, each with what went wrong and a fix."""

from station.errors import StationError


class SpectrumError(StationError):
    layer = "spectrum"


class SpectrumFileError(SpectrumError):
    """A spectrum or fingerprint file cannot be used; ``path`` names it."""

    def __init__(self, path: str, what: str, fix: str) -> None:
        super().__init__(f"{path}: {what}", fix)
        self.path = path


class CalibrationError(SpectrumError):
    layer = "calibration"
