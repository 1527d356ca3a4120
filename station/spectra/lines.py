"""The published line positions processing relies on. One table serves both
the physics model and the processing: they are facts about diamond and about
Hg-Ar lamps, not about our simulator."""

from drivers.sim.spectra.lines import (AR_LINES, DIAMOND_CENTRES, DIAMOND_RAMAN_SHIFT_CM, HG_AR_LINES,
                                       HG_LINES, ZPL_FWHM, raman_nm)

__all__ = ["AR_LINES", "DIAMOND_CENTRES", "DIAMOND_RAMAN_SHIFT_CM", "HG_AR_LINES", "HG_LINES", "raman_nm", "ZPL_FWHM"]
