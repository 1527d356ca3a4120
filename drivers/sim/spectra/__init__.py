"""Physics model of a diamond photoluminescence spectrometer (numpy only).

    from drivers.sim.spectra import Instrument, Stone, population, HgArLamp, HalogenLamp, Dark
    inst = Instrument("SN-0001")                   # everything instrument-specific seeded by serial
    counts = inst.expose(Stone("A17", "cvd"), integration_us=200_000, scans=4,
                         temperature_c=25.0, rng=np.random.default_rng(1))   # uint16[2048]
    dev = SimulatedSpectrometer(inst)              # the command-level view drivers wrap

See docs/SPECTRA.md for the model (lines, widths, noise, instrument variation).
"""

from drivers.sim.spectra.device import SimulatedSpectrometer
from drivers.sim.spectra.instrument import FULL_SCALE, Instrument
from drivers.sim.spectra.lines import (AR_LINES, DIAMOND_CENTRES, DIAMOND_RAMAN_SHIFT_CM, HG_AR_LINES,
                                       HG_LINES, raman_nm)
from drivers.sim.spectra.sources import (DEFAULT_MIX, KINDS, Dark, Emission, HalogenLamp, HgArLamp, Simulant,
                                         Stone, planck_photons, population)

__all__ = [
    "AR_LINES", "DEFAULT_MIX", "DIAMOND_CENTRES", "DIAMOND_RAMAN_SHIFT_CM", "Dark", "Emission", "FULL_SCALE",
    "HG_AR_LINES", "HG_LINES", "HalogenLamp", "HgArLamp", "Instrument", "KINDS", "SimulatedSpectrometer",
    "Simulant", "Stone", "planck_photons", "population", "raman_nm",
]
