"""Light sources the instrument model can look at: stones, the Hg-Ar lamp, a
halogen reference lamp, and nothing (dark).

A source says what light reaches the spectrometer's entrance, in
photo-electrons per second (a detector with unit quantum efficiency and unit
throughput): narrow lines (centre, FWHM, area) plus a broad continuum. The
instrument adds its own line spread, dispersion, response and noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import numpy as np

from drivers.sim.spectra.lines import ZPL_FWHM, DIAMOND_CENTRES, raman_nm, seed_of

KINDS = ("natural_Ia", "natural_IIa", "cvd", "hpht")
NATURAL = ("natural_Ia", "natural_IIa")

# One "Raman unit": the Raman line's rate with the nominal laser power, e-/s.
RAMAN_RATE = 2.0e5
RAMAN_FWHM_NM = 0.06  # about 2 cm^-1: far below any instrument's line spread

_EMPTY = np.zeros(0)


@dataclass(frozen=True)
class Emission:
    centres: np.ndarray = field(default_factory=lambda: _EMPTY)   # nm
    fwhms: np.ndarray = field(default_factory=lambda: _EMPTY)     # nm, intrinsic
    areas: np.ndarray = field(default_factory=lambda: _EMPTY)     # e-/s
    band_centres: np.ndarray = field(default_factory=lambda: _EMPTY)
    band_sigmas: np.ndarray = field(default_factory=lambda: _EMPTY)
    band_areas: np.ndarray = field(default_factory=lambda: _EMPTY)
    continuum: Callable[[np.ndarray], np.ndarray] | None = None   # e-/s/nm
    via_probe: bool = True  # through the probe's laser-blocking long-pass filter


# Room-temperature ZPL widths (nm) and phonon sidebands (centre nm, sigma nm,
# area as a multiple of the ZPL area: 1/Debye-Waller - 1).
SIDEBAND = {"N3": (445.0, 25.0, 8.0), "H3": (525.0, 20.0, 6.0), "NV0": (610.0, 30.0, 5.0),
            "NV-": (690.0, 40.0, 6.0), "SiV": (760.0, 15.0, 0.3), "GR1": (770.0, 25.0, 1.0)}

# kind -> centre -> (probability present, median area in Raman units, log-sd)
_LINE_STATS = {
    "natural_Ia": {"N3": (1.0, 3.0, 0.7), "H3": (0.4, 1.0, 0.8), "NV0": (0.3, 0.3, 0.7),
                   "NV-": (0.3, 0.3, 0.7), "GR1": (0.03, 0.5, 0.5)},
    "natural_IIa": {"H3": (0.1, 0.5, 0.7), "NV0": (0.3, 0.3, 0.7), "NV-": (0.3, 0.3, 0.7),
                    "GR1": (0.05, 0.5, 0.5)},
    "cvd": {"SiV": (0.9, 1.0, 1.0), "596/597": (0.5, 0.5, 0.7), "NV0": (0.9, 2.0, 0.8),
            "NV-": (0.9, 2.0, 0.8), "499.6": (0.2, 0.3, 0.5), "H3": (0.1, 0.5, 0.7)},
    "hpht": {"Ni": (0.7, 0.8, 0.8), "NV0": (0.6, 1.0, 0.8), "NV-": (0.6, 1.0, 0.8),
             "H2": (0.15, 0.5, 0.5), "H3": (0.1, 0.5, 0.7)},
}
_DIAGNOSTIC = np.array([c for comps in DIAMOND_CENTRES.values() for c in comps])


@dataclass(frozen=True)
class Stone:
    """A diamond with stable features drawn from a generator seeded by its id:
    the same id always has the same centres, strengths and background."""

    id: str
    kind: str = "natural_Ia"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown stone kind {self.kind!r}; one of {', '.join(KINDS)}")

    @property
    def natural(self) -> bool:
        return self.kind in NATURAL

    @cached_property
    def features(self) -> dict:
        rng = np.random.default_rng(seed_of("stone", self.id, self.kind))
        centres, fwhms, areas, names = [], [], [], []
        bc, bs, ba = [], [], []
        for name, (p, median, sd) in _LINE_STATS[self.kind].items():
            if rng.random() >= p:
                continue
            area = median * rng.lognormal(0.0, sd)
            strain = rng.normal(0.0, 0.08)  # nm: internal strain shifts the ZPL a little
            width = ZPL_FWHM[name] * rng.uniform(0.9, 1.15)
            comps = DIAMOND_CENTRES[name]
            for c in comps:
                centres.append(c + strain)
                fwhms.append(width)
                areas.append(area / len(comps))
                names.append(name)
            if name in SIDEBAND:
                c, s, mult = SIDEBAND[name]
                bc.append(c + rng.normal(0, 3.0))
                bs.append(s * rng.uniform(0.9, 1.1))
                ba.append(area * mult)
        # Broad featureless fluorescence (dislocations, aggregates, plastic deformation).
        for _ in range(rng.integers(1, 4)):
            bc.append(rng.uniform(450.0, 750.0))
            bs.append(rng.uniform(30.0, 110.0))
            ba.append(rng.lognormal(np.log(20.0), 1.0))
        # Unassigned minor lines: stable individual detail, kept clear of the
        # diagnostic centres so they never impersonate one.
        n_minor = rng.integers(3, 9)
        pos = rng.uniform(420.0, 980.0, size=64)
        pos = pos[np.min(np.abs(pos[:, None] - _DIAGNOSTIC[None, :]), axis=1) > 4.0][:n_minor]
        centres.extend(pos)
        fwhms.extend(rng.uniform(1.0, 4.0, size=pos.size))
        areas.extend(rng.lognormal(np.log(0.3), 0.8, size=pos.size))
        names.extend(["minor"] * pos.size)
        return {
            "centres": np.array(centres), "fwhms": np.array(fwhms), "areas": np.array(areas),
            "names": tuple(names), "band_centres": np.array(bc), "band_sigmas": np.array(bs),
            "band_areas": np.array(ba),
        }

    def centres_present(self) -> set[str]:
        return {n for n in self.features["names"] if n != "minor"}

    def emission(self, laser_nm: float, rng: np.random.Generator | None = None) -> Emission:
        """The light a measurement collects. With ``rng``, the stone sits a
        little differently each time: overall collection varies by about 15 %
        and the line/background balance by a few %."""
        f = self.features
        scale, lines_vs_bands, per_line = 1.0, 1.0, np.ones(f["areas"].size)
        if rng is not None:
            scale = rng.lognormal(0.0, 0.15)
            lines_vs_bands = rng.lognormal(0.0, 0.03)
            per_line = rng.lognormal(0.0, 0.02, size=f["areas"].size)
        raman = raman_nm(laser_nm)
        k = RAMAN_RATE * scale
        return Emission(
            centres=np.append(f["centres"], raman),
            fwhms=np.append(f["fwhms"], RAMAN_FWHM_NM),
            areas=np.append(f["areas"] * per_line * lines_vs_bands, 1.0) * k,
            band_centres=f["band_centres"], band_sigmas=f["band_sigmas"],
            band_areas=f["band_areas"] * k,
        )


DEFAULT_MIX = {"natural_Ia": 985 / 1200, "natural_IIa": 15 / 1200, "cvd": 100 / 1200, "hpht": 100 / 1200}


def population(n: int, mix: dict[str, float] | None = None, seed: int = 0) -> list[Stone]:
    """``n`` stones, kinds in the proportions of ``mix`` (default: the ASSURE
    1,000 natural : 200 synthetic, with type IIa about 1.5 % of naturals and
    the synthetics half CVD, half HPHT). Exact counts, shuffled deterministically."""
    mix = mix or DEFAULT_MIX
    kinds = list(mix)
    weights = np.array([mix[k] for k in kinds], dtype=float)
    counts = np.floor(weights / weights.sum() * n).astype(int)
    counts[np.argmax(weights)] += n - counts.sum()
    labels = np.repeat(np.array(kinds), counts)
    np.random.default_rng(seed_of("population", seed)).shuffle(labels)
    return [Stone(f"P{seed}-{i:06d}", str(k)) for i, k in enumerate(labels)]


# Relative intensities of a typical Hg-Ar pencil lamp on a silicon detector
# (order of magnitude is what matters: strong Hg 546/436, strong Ar 763/811).
_HG_REL = {404.656: 0.5, 407.783: 0.08, 435.833: 1.0, 546.074: 1.6, 576.960: 0.25, 579.066: 0.28}
_AR_REL = {696.543: 0.25, 706.722: 0.25, 714.704: 0.05, 727.294: 0.1, 738.393: 0.2, 750.387: 0.5,
           763.511: 1.0, 772.376: 0.3, 794.818: 0.2, 800.616: 0.25, 811.531: 0.9, 826.452: 0.3,
           842.465: 0.35, 852.144: 0.15, 866.794: 0.05, 912.297: 0.4, 922.450: 0.15}
# Real lamps also emit lines the calibration list leaves out; some blend with listed ones.
_UNLISTED = {491.607: 0.02, 801.479: 0.12, 810.369: 0.3, 840.821: 0.15, 965.779: 0.3}


@dataclass(frozen=True)
class HgArLamp:
    rate: float = 4.0e5  # e-/s for relative intensity 1

    def emission(self, laser_nm: float = 0.0, rng: np.random.Generator | None = None) -> Emission:
        rel = {**_HG_REL, **_AR_REL, **_UNLISTED}
        c = np.array(list(rel))
        a = np.array(list(rel.values())) * self.rate
        return Emission(centres=c, fwhms=np.full(c.size, 0.005), areas=a, via_probe=False)


HC_OVER_K_NM = 1.438777e7  # second radiation constant, nm K


def planck_photons(wl_nm: np.ndarray, temperature_k: float) -> np.ndarray:
    """Relative photon radiance of a black body per nm (unnormalised)."""
    return wl_nm ** -4.0 / np.expm1(HC_OVER_K_NM / (wl_nm * temperature_k))


@dataclass(frozen=True)
class HalogenLamp:
    """A tungsten-halogen reference lamp at a known colour temperature (CIE
    illuminant A: 2856 K), placed where the stone sits."""

    temperature_k: float = 2856.0
    rate: float = 3.0e5  # e-/s/nm at 700 nm

    def emission(self, laser_nm: float = 0.0, rng: np.random.Generator | None = None) -> Emission:
        norm = self.rate / planck_photons(np.array(700.0), self.temperature_k)
        t = self.temperature_k
        return Emission(continuum=lambda wl: norm * planck_photons(wl, t), via_probe=True)


@dataclass(frozen=True)
class Dark:
    """Nothing: the shutter closed or the laser off."""

    def emission(self, laser_nm: float = 0.0, rng: np.random.Generator | None = None) -> Emission:
        return Emission()


# Raman shifts (cm^-1) and relative strengths of common diamond simulants.
SIMULANT_RAMAN = {
    "moissanite": ((767.0, 1.0), (789.0, 0.6), (965.0, 0.3)),   # 6H-SiC
    "cubic_zirconia": ((470.0, 0.4), (640.0, 1.0)),              # broad bands in a disordered lattice
}


@dataclass(frozen=True)
class Simulant:
    """A stone that is not diamond: no 1332.5 cm^-1 line, its own Raman lines,
    and broad featureless fluorescence."""

    id: str
    material: str = "moissanite"

    def __post_init__(self) -> None:
        if self.material not in SIMULANT_RAMAN:
            raise ValueError(f"unknown simulant {self.material!r}; one of {', '.join(SIMULANT_RAMAN)}")

    def emission(self, laser_nm: float, rng: np.random.Generator | None = None) -> Emission:
        g = np.random.default_rng(seed_of("simulant", self.id, self.material))
        scale = rng.lognormal(0.0, 0.15) if rng is not None else 1.0
        lines = SIMULANT_RAMAN[self.material]
        width = 0.3 if self.material == "moissanite" else 4.0  # nm: sharp crystal vs disordered
        return Emission(
            centres=np.array([raman_nm(laser_nm, shift) for shift, _ in lines]),
            fwhms=np.full(len(lines), width),
            areas=np.array([rel for _, rel in lines]) * RAMAN_RATE * scale,
            band_centres=np.array([g.uniform(500.0, 700.0)]), band_sigmas=np.array([g.uniform(60.0, 120.0)]),
            band_areas=np.array([g.lognormal(np.log(10.0), 0.7)]) * RAMAN_RATE * scale,
        )
