"""Wavelength calibration from a Hg-Ar lamp, and a known line found where it is."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.polynomial import Polynomial

from drivers.sim.spectra import Dark, Emission, HgArLamp, Instrument, raman_nm
from spectra_helpers import calibrate, unit
from station.spectra.calibration import find_peaks, fit_wavelengths
from station.spectra.errors import CalibrationError


@pytest.mark.parametrize("serial", ["SPX-A-0001", "SPX-B-0002", "ZZ-77"])
def test_a_known_line_is_found_within_0_05_nm_after_calibration(serial):
    dev = unit(serial)
    cal = calibrate(dev)
    fit = cal.wavelength_fit
    assert fit.rms_nm < 0.03 and len(fit.lines_used) >= 15
    # A line the fit never saw: a single narrow emission line at 660.000 nm.
    line = Emission(centres=np.array([660.0]), fwhms=np.array([0.01]), areas=np.array([3e5]), via_probe=False)
    inst = dev.instrument
    counts = inst.expose(line, 100_000, 8, rng=np.random.default_rng(3)).astype(float)
    counts -= inst.expose(Dark(), 100_000, 8, rng=np.random.default_rng(4))
    pix, _, _ = find_peaks(counts)
    assert pix.size == 1
    found = Polynomial(cal.wavelength_coeffs)(pix[0])
    assert abs(found - 660.0) <= 0.05
    # the unit's stored coefficients alone are off by far more
    assert abs(Polynomial(inst.wavelength_coeffs)(pix[0]) - 660.0) > 0.3


def test_the_raman_line_lands_on_its_shift_from_the_laser():
    assert round(raman_nm(532.0), 1) == 572.6 and round(raman_nm(405.0), 1) == 428.1


def test_identification_survives_a_stored_calibration_off_by_4_nm():
    inst = Instrument("SPX-A-0001")
    rng = np.random.default_rng(5)
    lamp = inst.expose(HgArLamp(), 150_000, 10, rng=rng).astype(float) - inst.expose(Dark(), 150_000, 10, rng=rng)
    off = list(inst.wavelength_coeffs)
    off[0] += 4.0
    fit = fit_wavelengths(lamp, off)
    assert fit.rms_nm < 0.03
    assert np.abs(fit.wavelengths(inst.n_pixels) - inst.wavelengths)[20:-20].max() < 0.05


def test_order_two_is_allowed_and_order_four_refused():
    inst = Instrument("SPX-A-0001")
    rng = np.random.default_rng(5)
    lamp = inst.expose(HgArLamp(), 150_000, 10, rng=rng).astype(float) - inst.expose(Dark(), 150_000, 10, rng=rng)
    assert len(fit_wavelengths(lamp, inst.wavelength_coeffs, order=2).coeffs) == 3
    with pytest.raises(CalibrationError):
        fit_wavelengths(lamp, inst.wavelength_coeffs, order=4)


def test_a_dark_frame_is_not_a_lamp():
    inst = Instrument("SPX-A-0001")
    rng = np.random.default_rng(6)
    dark = inst.expose(Dark(), 150_000, 4, rng=rng).astype(float) - inst.expose(Dark(), 150_000, 4, rng=rng)
    with pytest.raises(CalibrationError) as exc:
        fit_wavelengths(dark, inst.wavelength_coeffs)
    assert "lamp" in exc.value.fix


def test_the_lamp_emits_every_listed_line():
    from drivers.sim.spectra import HG_AR_LINES

    lamp = set(HgArLamp().emission().centres.tolist())
    assert set(HG_AR_LINES) <= lamp and len(HG_AR_LINES) == 23
