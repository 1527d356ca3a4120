"""Carat arithmetic on integer micrograms.

1 ct = 200 mg = 200_000 µg, so 0.001 ct = 200 µg and 0.01 ct = 2_000 µg.
Everything here is integer arithmetic: a float never decides a threshold.
"""

from __future__ import annotations

from decimal import Decimal

UG_PER_CT = 200_000
UG_PER_MILLICARAT = 200

# Scope thresholds of the G7/EU ban on Russian diamonds processed in third countries.
BAN_THRESHOLDS_UG = (100_000, 200_000)  # 0.50 ct, 1.00 ct


def millicarats(mass_ug: int) -> int:
    """Weight to 0.001 ct, truncated (the balance's third decimal)."""
    _require_int(mass_ug)
    return mass_ug // UG_PER_MILLICARAT if mass_ug >= 0 else -((-mass_ug) // UG_PER_MILLICARAT)


def trade_centicarats(mass_ug: int) -> int:
    """Trade rounding to 0.01 ct: truncate, except round up when the third decimal is 9.

    GIA/CIBJO practice: 1.768 -> 1.76, 1.769 -> 1.77, 0.499 -> 0.50, 2.001 -> 2.00.
    """
    mct = millicarats(mass_ug)
    if mct < 0:
        raise ValueError("a negative mass has no trade weight")
    cct, third = divmod(mct, 10)
    return cct + 1 if third == 9 else cct


def format_carats(mass_ug: int) -> str:
    """Trade weight as text, e.g. ``"0.50"``."""
    return str(Decimal(trade_centicarats(mass_ug)).scaleb(-2).quantize(Decimal("0.01")))


def format_raw_carats(mass_ug: int) -> str:
    """Raw weight to 0.001 ct as text, e.g. ``"0.499"``."""
    return str(Decimal(millicarats(mass_ug)).scaleb(-3).quantize(Decimal("0.001")))


def straddled_thresholds(mass_ug: int, uncertainty_ug: int) -> list[int]:
    """Ban thresholds (µg) that lie within ``mass ± uncertainty``: such a stone needs a second weighing."""
    _require_int(mass_ug)
    _require_int(uncertainty_ug)
    return [t for t in BAN_THRESHOLDS_UG if mass_ug - uncertainty_ug <= t <= mass_ug + uncertainty_ug]


def _require_int(value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"masses are integer micrograms, got {type(value).__name__}")
