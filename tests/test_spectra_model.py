"""The physics model behaves like the physics, and calibration removes what differs between units."""

from __future__ import annotations

import numpy as np

from drivers.sim.spectra import FULL_SCALE, Dark, Emission, HalogenLamp, Instrument, Stone, planck_photons
from spectra_helpers import calibrate, unit
from station.spectra.process import GRID, Processor


def _dark_mean(inst, us, temp):
    return float(inst.expose(Dark(), us, 8, temperature_c=temp, rng=np.random.default_rng(1)).mean())


def test_dark_current_grows_with_integration_time_and_doubles_every_6_5_degrees():
    inst = Instrument("SPX-A-0001")
    bias = _dark_mean(inst, 1_000, 25.0)
    at_1s, at_2s = _dark_mean(inst, 1_000_000, 25.0) - bias, _dark_mean(inst, 2_000_000, 25.0) - bias
    warm = _dark_mean(inst, 1_000_000, 31.5) - bias
    assert 1.9 < at_2s / at_1s < 2.1
    assert 1.9 < warm / at_1s < 2.1


def test_the_adc_clips_at_full_scale():
    inst = Instrument("SPX-A-0001")
    bright = Emission(band_centres=np.array([650.0]), band_sigmas=np.array([80.0]), band_areas=np.array([1e12]))
    counts = inst.expose(bright, 100_000, 2, rng=np.random.default_rng(2))
    assert counts.dtype == np.uint16 and counts.max() == FULL_SCALE and (counts == FULL_SCALE).sum() > 100


def test_same_seed_same_counts_and_two_serials_are_two_instruments():
    a, b = Instrument("SPX-A-0001"), Instrument("SPX-B-0002")
    s = Stone("K1", "cvd")
    one = a.expose(s, 200_000, 4, rng=np.random.default_rng(3))
    assert np.array_equal(one, Instrument("SPX-A-0001").expose(s, 200_000, 4, rng=np.random.default_rng(3)))
    assert np.abs(a.wavelengths - b.wavelengths).max() > 1.0
    assert a.params["lsf_fwhm_nm"] != b.params["lsf_fwhm_nm"]
    wl = np.linspace(450, 900, 50)
    ra, rb = a.response(wl), b.response(wl)
    assert np.std(np.log(ra / rb)) > 0.05  # different spectral shape, not only a scale


def test_response_calibration_makes_two_units_see_one_smooth_source_alike():
    # a source the calibration never saw: a black body at 3500 K
    hot = Emission(continuum=lambda wl: 4e5 * planck_photons(wl, 3500.0) / planck_photons(np.array(700.0), 3500.0))
    shapes = []
    for serial, seed in (("SPX-A-0001", 1), ("SPX-B-0002", 2)):
        dev = unit(serial, seed)
        proc = Processor(calibrate(dev))
        dev.place(hot, jitter=False)
        dev.set_integration_us(50_000)
        dev.set_scans(20)
        raw = dev.acquire()
        dev.set_lamp(False)
        dark = dev.acquire()
        shapes.append(proc.process(raw, dark).values)
    inside = (GRID > 430) & (GRID < 980)
    ratio = shapes[0][inside] / shapes[1][inside]
    assert np.max(np.abs(ratio - 1)) < 0.03
    truth = planck_photons(GRID[inside], 3500.0)
    truth = truth / truth.mean() * shapes[0][inside].mean()
    assert np.max(np.abs(shapes[0][inside] / truth - 1)) < 0.05


def test_the_halogen_lamp_is_the_2856_k_black_body_it_claims():
    em = HalogenLamp().emission()
    wl = np.array([500.0, 700.0, 900.0])
    r = em.continuum(wl) / planck_photons(wl, 2856.0)
    assert np.allclose(r / r[0], 1.0)


def test_nonlinearity_correction_restores_counts_proportional_to_time():
    inst = Instrument("SPX-A-0001")
    flat = Emission(band_centres=np.array([650.0]), band_sigmas=np.array([150.0]), band_areas=np.array([2.5e8]))
    rate = inst.rate(flat)
    peak = int(np.argmax(rate))
    k0, k1, k2 = inst.nonlinearity_coeffs
    per_s = {}
    for us in (100_000, 800_000):  # ~10 % and ~75 % of full scale
        rng = np.random.default_rng(us)
        x = (inst.expose(rate, us, 50, rng=rng).astype(float) - inst.expose(Dark(), us, 50, rng=rng))[peak - 20:peak + 20]
        per_s[us] = (x.mean() / us, (x * (k0 + x * (k1 + x * k2))).mean() / us)
    raw_change = per_s[800_000][0] / per_s[100_000][0] - 1
    fixed_change = per_s[800_000][1] / per_s[100_000][1] - 1
    assert raw_change < -0.01 and abs(fixed_change) < 0.003
