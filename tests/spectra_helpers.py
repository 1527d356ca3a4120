"""Shared set-up for the spectra tests: simulated units, calibrated the way a technician would."""

from __future__ import annotations

import numpy as np

from drivers.sim.spectra import HalogenLamp, HgArLamp, Instrument, SimulatedSpectrometer
from station.spectra.acquire import acquire
from station.spectra.analyse import calibration_from_lamps
from station.spectra.calibration import Calibration
from station.spectra.process import Processor

LASER_NM = 405.0


def unit(serial: str, seed: int = 1) -> SimulatedSpectrometer:
    return SimulatedSpectrometer(Instrument(serial, laser_nm=LASER_NM), rng=np.random.default_rng(seed))


def calibrate(dev: SimulatedSpectrometer) -> Calibration:
    dev.place(HgArLamp(), jitter=False)
    hg = acquire(dev, scans=10)
    dev.place(HalogenLamp(), jitter=False)
    hal = acquire(dev, scans=20)
    return calibration_from_lamps(hg, hal, dev.wavelength_coeffs, nonlinearity=dev.nonlinearity_coeffs)


def stored_only(dev: SimulatedSpectrometer) -> Calibration:
    return Calibration(dev.instrument.n_pixels, dev.wavelength_coeffs, None, dev.nonlinearity_coeffs)


def measure(dev: SimulatedSpectrometer, proc: Processor, stone):
    dev.place(stone)
    a = acquire(dev)
    return proc.process(a.raw, a.dark)
