"""An in-process simulated spectrometer: the physics model behind the small
command set every spectrometer driver offers (integration time, scans to
average, light on/off, acquire). The wire simulators (serial, Modbus) wrap one
of these; tests and the evaluation bench use it directly."""

from __future__ import annotations

import numpy as np

from drivers.sim.spectra.instrument import Instrument
from drivers.sim.spectra.lines import seed_of
from drivers.sim.spectra.sources import Dark, Emission

MIN_INTEGRATION_US = 1_000
MAX_INTEGRATION_US = 10_000_000


class SimulatedSpectrometer:
    def __init__(self, instrument: Instrument, *, temperature_c: float = 25.0,
                 rng: np.random.Generator | None = None) -> None:
        self.instrument = instrument
        self.temperature_c = temperature_c
        self.rng = rng if rng is not None else np.random.default_rng(seed_of("device", instrument.serial))
        self.integration_us = 100_000
        self.scans = 1
        self.lamp_on = True
        self.acquisitions = 0
        self._rate = instrument.rate(Dark().emission())
        self._dark_rate = self._rate

    max_counts = Instrument.max_counts
    min_integration_us = MIN_INTEGRATION_US
    max_integration_us = MAX_INTEGRATION_US

    @property
    def serial(self) -> str:
        return self.instrument.serial

    @property
    def wavelength_coeffs(self) -> tuple[float, ...]:
        return self.instrument.wavelength_coeffs

    @property
    def nonlinearity_coeffs(self) -> tuple[float, ...]:
        return self.instrument.nonlinearity_coeffs

    def place(self, source, *, jitter: bool = True) -> None:
        """Put a stone (or lamp) on the probe. Each placement collects the light
        a little differently (see Stone.emission); the exposures that follow
        share that placement."""
        em = source if isinstance(source, Emission) else source.emission(
            self.instrument.laser_nm, self.rng if jitter else None)
        self._rate = self.instrument.rate(em)

    def set_integration_us(self, us: int) -> None:
        if not MIN_INTEGRATION_US <= us <= MAX_INTEGRATION_US:
            raise ValueError(f"integration {us} µs outside {MIN_INTEGRATION_US}..{MAX_INTEGRATION_US}")
        self.integration_us = int(us)

    def set_scans(self, n: int) -> None:
        if not 1 <= n <= 1000:
            raise ValueError(f"scans {n} outside 1..1000")
        self.scans = int(n)

    def set_lamp(self, on: bool) -> None:
        self.lamp_on = bool(on)

    def acquire(self) -> np.ndarray:
        self.acquisitions += 1
        rate = self._rate if self.lamp_on else self._dark_rate
        return self.instrument.expose_rate(rate, self.integration_us, self.scans, self.temperature_c, self.rng)
