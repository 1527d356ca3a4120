"""Weighing units the drivers convert, and the one exact conversion to µg.

Masses are integer micrograms everywhere. A device prints a decimal string in
its unit; it is multiplied out with ``Decimal`` in a context that traps any
rounding, so no float ever touches a weight and a value finer than 1 µg is an
error, never a silently rounded number.
"""

from __future__ import annotations

import decimal
from decimal import Decimal

UNIT_UG = {"mg": 1_000, "g": 1_000_000, "kg": 1_000_000_000, "ct": 200_000}
MAX_VALUE_CHARS = 20  # keeps Decimal arithmetic exact within the 60-digit context below


def exact_micrograms(number: str, unit: str, shown: str) -> int:
    """``number`` (unsigned decimal digits, already checked by the caller's
    grammar) in ``unit`` as integer µg. ValueError for a unit we do not
    convert or a value finer than 1 µg; ``shown`` is the value as the device
    printed it, for that message."""
    if unit not in UNIT_UG:
        raise ValueError(f"unsupported unit {unit!r}")
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[decimal.Inexact] = True
        ug = Decimal(number) * UNIT_UG[unit]
        if ug != ug.to_integral_value():
            raise ValueError(f"{shown} {unit} is finer than 1 µg")
        return int(ug)
