"""A small CCD spectrometer with a laser probe, built from its serial number.

Two serial numbers give two instruments that differ as two real units of one
model do: where each pixel looks (a cubic pixel->nm polynomial), how sensitive
each wavelength is (grating efficiency x detector QE x etalon fringes x the
probe's long-pass filter), how sharp a line comes out (line-spread width), and
the detector's bias, gain, read noise, dark current and nonlinearity.

The coefficients the unit *stores* (as a device would in its EEPROM) are its
factory calibration, which has drifted by up to ~1.5 nm: a station that trusts
them without a Hg-Ar check gets wavelengths wrong by that much.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numpy.polynomial import Polynomial

from drivers.sim.spectra.lines import seed_of
from drivers.sim.spectra.sources import Emission

FULL_SCALE = 65535
DARK_DOUBLING_C = 6.5  # silicon dark current doubles every ~6-7 °C


@dataclass
class Instrument:
    serial: str
    n_pixels: int = 2048
    laser_nm: float = 405.0
    params: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(seed_of("instrument", self.serial))
        n = self.n_pixels
        u = np.linspace(0.0, 1.0, n)
        lo, hi = rng.uniform(386.0, 394.0), rng.uniform(1004.0, 1014.0)
        bow, twist = rng.uniform(-8.0, 8.0), rng.uniform(-6.0, 6.0)
        true_wl = lo + (hi - lo) * u + bow * u * (u - 1.0) + twist * u * (u - 0.5) * (u - 1.0)
        p = np.arange(n, dtype=float)
        true_poly = Polynomial.fit(p, true_wl, 3).convert()
        drift = Polynomial([rng.choice([-1, 1]) * rng.uniform(0.5, 1.5), rng.uniform(-4e-4, 4e-4)])
        self.params = {
            "true_poly": true_poly,
            "stored_poly": (true_poly + drift),
            "lsf_fwhm_nm": rng.uniform(0.8, 1.6),
            "qe_peak": rng.uniform(560.0, 680.0), "qe_width": rng.uniform(200.0, 260.0),
            "blaze": rng.uniform(450.0, 750.0), "blaze_width": rng.uniform(250.0, 400.0),
            "etalon_amp": rng.uniform(0.0, 0.03), "etalon_period": rng.uniform(8.0, 15.0),
            "etalon_phase": rng.uniform(0.0, 2 * np.pi),
            "filter_edge": self.laser_nm + rng.uniform(2.5, 3.5),
            "throughput": rng.uniform(0.6, 1.2),
            "bias": rng.uniform(900.0, 1100.0), "read_noise_e": rng.uniform(10.0, 25.0),
            "gain_e": rng.uniform(1.5, 3.0),
            "dark_e_s": rng.uniform(100.0, 400.0) * rng.lognormal(0.0, 0.4, n)
            * np.where(rng.random(n) < 0.002, 20.0, 1.0),
            "nonlinearity": rng.uniform(0.02, 0.05),
        }

    # --- what the device reports ---------------------------------------
    @property
    def wavelength_coeffs(self) -> tuple[float, ...]:
        """Stored pixel->nm coefficients c0..c3 (λ = c0 + c1 p + c2 p² + c3 p³)."""
        return tuple(float(c) for c in self.params["stored_poly"].coef)

    @property
    def nonlinearity_coeffs(self) -> tuple[float, ...]:
        """k0..k2 with true = m * (k0 + k1 m + k2 m²), m = dark-subtracted counts."""
        k = self.params["nonlinearity"] / FULL_SCALE
        return (1.0, k, 2.0 * k * k)

    max_counts = FULL_SCALE

    # --- the physics ------------------------------------------------------
    @cached_property
    def wavelengths(self) -> np.ndarray:
        """Where each pixel really looks (nm)."""
        return self.params["true_poly"](np.arange(self.n_pixels, dtype=float))

    @cached_property
    def _dispersion(self) -> np.ndarray:
        return np.abs(self.params["true_poly"].deriv()(np.arange(self.n_pixels, dtype=float)))

    def response(self, wl: np.ndarray, via_probe: bool = True) -> np.ndarray:
        """Electrons per photon at the entrance (relative, instrument-specific)."""
        q = self.params
        qe = 0.15 + 0.8 * np.exp(-0.5 * ((wl - q["qe_peak"]) / q["qe_width"]) ** 2)
        grating = np.exp(-0.5 * ((wl - q["blaze"]) / q["blaze_width"]) ** 2)
        ramp = np.clip((wl - 700.0) / 100.0, 0.0, 1.0)  # back-thinned CCDs fringe in the NIR
        etalon = 1.0 + q["etalon_amp"] * ramp * np.sin(2 * np.pi * (wl - 700.0) / q["etalon_period"]
                                                        + q["etalon_phase"])
        r = q["throughput"] * qe * grating * etalon
        if via_probe:
            r = r / (1.0 + np.exp(-(wl - q["filter_edge"]) / 0.4))
        return r

    def rate(self, em: Emission) -> np.ndarray:
        """Expected photo-electrons per second in each pixel."""
        wl, disp = self.wavelengths, self._dispersion
        lsf_var = (self.params["lsf_fwhm_nm"] / 2.3548) ** 2 + disp.mean() ** 2 / 12.0
        density = np.zeros(self.n_pixels)
        if em.centres.size:
            s = np.sqrt((em.fwhms[:, None] / 2.3548) ** 2 + lsf_var)
            g = np.exp(-0.5 * ((wl[None, :] - em.centres[:, None]) / s) ** 2) / (s * np.sqrt(2 * np.pi))
            density += em.areas @ g
        if em.band_centres.size:
            s = np.sqrt(em.band_sigmas[:, None] ** 2 + lsf_var)
            g = np.exp(-0.5 * ((wl[None, :] - em.band_centres[:, None]) / s) ** 2) / (s * np.sqrt(2 * np.pi))
            density += em.band_areas @ g
        if em.continuum is not None:
            density += em.continuum(wl)
        return density * disp * self.response(wl, em.via_probe)

    def expose(self, source, integration_us: int, scans: int = 1, temperature_c: float = 25.0,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """One acquisition: ``scans`` exposures of ``integration_us`` each,
        averaged as the device does, as uint16 counts. ``source`` is a Stone,
        a lamp, Dark(), an Emission, or a precomputed per-pixel rate array."""
        if isinstance(source, np.ndarray):
            rate = source
        else:
            em = source if isinstance(source, Emission) else source.emission(self.laser_nm)
            rate = self.rate(em)
        rng = rng if rng is not None else np.random.default_rng(seed_of("noise", self.serial))
        return self.expose_rate(rate, integration_us, scans, temperature_c, rng)

    def expose_rate(self, rate: np.ndarray, integration_us: int, scans: int, temperature_c: float,
                    rng: np.random.Generator) -> np.ndarray:
        q = self.params
        t = integration_us * 1e-6
        dark = q["dark_e_s"] * 2.0 ** ((temperature_c - 25.0) / DARK_DOUBLING_C)
        lam = (rate + dark) * t
        shape = (max(1, int(scans)), self.n_pixels)
        electrons = rng.poisson(lam, shape) + rng.normal(0.0, q["read_noise_e"], shape)
        signal = electrons / q["gain_e"]
        signal = signal * (1.0 - q["nonlinearity"] * signal / FULL_SCALE)
        counts = np.clip(np.rint(q["bias"] + signal), 0, FULL_SCALE)  # the ADC clips each scan
        return np.rint(counts.mean(axis=0)).astype(np.uint16)
