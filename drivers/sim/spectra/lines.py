"""Line positions the physics model and the processing share as plain facts.

All wavelengths are in air, in nm. Diamond centres: zero-phonon lines (ZPL) of
the optical centres used in screening. Hg-Ar: the emission lines of a pencil
calibration lamp that survive a glass envelope.
"""

from __future__ import annotations

import hashlib

# name -> components (nm). A doublet the instrument cannot resolve at room
# temperature is listed with both components; screening looks for the blend.
DIAMOND_CENTRES: dict[str, tuple[float, ...]] = {
    "N3": (415.2,),
    "499.6": (499.6,),
    "H3": (503.2,),
    "NV0": (575.0,),
    "596/597": (596.5, 597.2),
    "NV-": (637.0,),
    "SiV": (736.6, 736.9),
    "GR1": (741.1,),
    "Ni": (882.9, 884.7),
    "H2": (986.3,),
}

# Typical room-temperature zero-phonon line widths (FWHM, nm).
ZPL_FWHM = {"N3": 2.0, "499.6": 1.5, "H3": 2.5, "NV0": 3.0, "596/597": 1.2, "NV-": 4.0,
            "SiV": 1.5, "GR1": 2.5, "Ni": 1.5, "H2": 3.0}

HG_LINES = (404.656, 407.783, 435.833, 546.074, 576.960, 579.066)
AR_LINES = (696.543, 706.722, 714.704, 727.294, 738.393, 750.387, 763.511, 772.376, 794.818,
            800.616, 811.531, 826.452, 842.465, 852.144, 866.794, 912.297, 922.450)
HG_AR_LINES = HG_LINES + AR_LINES

DIAMOND_RAMAN_SHIFT_CM = 1332.5


def raman_nm(laser_nm: float, shift_cm: float = DIAMOND_RAMAN_SHIFT_CM) -> float:
    """Stokes line of a Raman shift (cm^-1) for a laser (nm): 1/λ = 1/λ0 - shift.
    532 nm -> 572.6 nm; 405 nm -> 428.1 nm."""
    return 1.0 / (1.0 / laser_nm - shift_cm * 1e-7)


def seed_of(*parts: object) -> int:
    """A stable 64-bit seed from any printable parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")
