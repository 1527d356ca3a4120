"""Sartorius SBI print lines: the grammar of what a balance sends for ``ESC P``.

A print line is 16 characters with CR LF (14 without), or 22 (20) when the
balance is set to put a 6-character ID code first::

    position  1     2..10            11   12..14   15 16
              sign  value (right-    ' '  unit or  CR LF
                    aligned, leading      blanks
                    zeros as spaces)

    b"+   123.56 g  "            stable 123.56 g
    b"+   123.56    "            the same value while the pan is still moving
    b"N     +   123.56 g  "      22 characters, ID code "N" (net)

The sign is ``+``, ``-`` or a space. Sartorius manuals give the value as
positions 3..10 with position 2 a space; older WZ weigh cells use 2..10, so
both are read. The unit is printed only while the balance shows its stability
symbol: blank unit positions are the stability marker (dynamic reading).

Special lines carry a code instead of a value: ``H``/``HH``/``High`` overload,
``L``/``LL``/``Low`` underload, ``C``/``Cal.Ext.`` adjustment running, and
``Err ##``/``ERR ###`` error codes, in 16-character lines or after the
22-character ``Stat`` ID.

Masses are integer micrograms, converted with ``Decimal``: no float ever
touches a weight. :func:`parse_line` raises only ``ProtocolError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from drivers.errors import ProtocolError
from drivers.units import MAX_VALUE_CHARS, UNIT_UG, exact_micrograms

SHORT, LONG = 14, 20  # line lengths without CR LF (16 and 22 on the wire)
ID_WIDTH = 6
FIX_RESYNC = "the driver resynchronises with ESC P; if it repeats, check baud rate and framing"

# Units a Sartorius balance can be set to that we do not convert (oz, ozt,
# lb, GN, dwt, tlh, mom, K, /lb, %, pcs ...): a menu setting to change.
_FOREIGN_UNIT = re.compile(r"[A-Za-z/%][A-Za-z/%.]{0,2}")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_ERROR = re.compile(r"(?:Err|ERR) +(\d{1,3})|((?:APP|DIS|PRT)\.ERR)")
_SPECIAL = {
    "H": "H", "HH": "H", "High": "H",
    "L": "L", "LL": "L", "Low": "L",
    "C": "C", "Cal.Ext.": "C",
}


@dataclass(frozen=True)
class Reading:
    """A weight. ``unit`` is None while the balance is not stable."""

    ident: str  # the 22-character format's ID code ("N", "G"...), "" in 16
    sign: str
    number: str  # the digits as printed, e.g. "123.56"
    unit: str | None
    raw: str

    @property
    def stable(self) -> bool:
        return self.unit is not None

    def micrograms(self, unit: str) -> int:
        """The value in ``unit`` (the printed one, or the caller's assumption
        for a dynamic line) as exact integer µg; ValueError if not exact."""
        return to_micrograms(self.sign + self.number, unit)

    def digit_ug(self, unit: str) -> int:
        """One step of the last printed digit in µg (0 if finer than 1 µg)."""
        decimals = len(self.number.partition(".")[2])
        step = Decimal(UNIT_UG[unit]).scaleb(-decimals)
        return int(step) if step == step.to_integral_value() else 0


@dataclass(frozen=True)
class ForeignUnit:
    """A well-formed stable weight in a unit we do not convert."""

    ident: str
    unit: str
    raw: str


@dataclass(frozen=True)
class Special:
    """``H`` overload, ``L`` underload, ``C`` adjustment running."""

    ident: str
    code: str
    shown: str  # as printed ("HH", "High"...)
    raw: str


@dataclass(frozen=True)
class ErrorLine:
    code: str  # "02", "101", or "APP.ERR"
    raw: str


Reply = Union[Reading, ForeignUnit, Special, ErrorLine]


def _bad(raw: bytes, why: str) -> ProtocolError:
    return ProtocolError(f"unparseable SBI print line {raw!r}: {why}", FIX_RESYNC)


def to_micrograms(value: str, unit: str) -> int:
    """Exact conversion of a signed decimal string in ``unit`` to integer µg."""
    sign, number = (value[0], value[1:]) if value[:1] in ("+", "-") else ("+", value)
    if _NUMBER.fullmatch(number) is None or len(number) > MAX_VALUE_CHARS:
        raise ValueError(f"not a decimal weight value: {value!r}")
    n = exact_micrograms(number, unit, value)
    return -n if sign == "-" else n


def parse_line(raw: bytes) -> Reply:
    """Parse one print line (without CR LF). Raises only ``ProtocolError``."""
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise _bad(raw, "non-printable or non-ASCII bytes")
    if len(raw) not in (SHORT, LONG):
        raise _bad(raw, f"{len(raw) + 2} characters with CR LF; a print line has 16 or 22")
    text = raw.decode("ascii")
    ident = text[:ID_WIDTH].strip(" ") if len(raw) == LONG else ""
    body = text[-SHORT:]
    core = body.strip(" ")
    m = _ERROR.fullmatch(core)
    if m is not None:
        return ErrorLine(m[1] or m[2], text)
    if core in _SPECIAL:
        return Special(ident, _SPECIAL[core], core, text)
    sign, value, gap, unit = body[0], body[1:10], body[10], body[11:]
    if sign not in "+- ":
        raise _bad(raw, f"position 1 must be a sign or a space, not {sign!r}")
    if gap != " ":
        raise _bad(raw, "position 11 must be a space")
    number = value.strip(" ")
    if _NUMBER.fullmatch(number) is None:
        raise _bad(raw, f"positions 2-10 hold no decimal number: {value!r}")
    if not unit.strip(" "):
        return Reading(ident, sign.strip(" "), number, None, text)
    name = unit.rstrip(" ")
    if name in UNIT_UG:
        try:
            to_micrograms(number, name)
        except ValueError as e:
            raise _bad(raw, str(e)) from None
        return Reading(ident, sign.strip(" "), number, name, text)
    if _FOREIGN_UNIT.fullmatch(name):
        return ForeignUnit(ident, name, text)
    raise _bad(raw, f"positions 12-14 hold no unit: {unit!r}")


def format_line(sign: str, number: str, unit: str | None, ident: str | None = None) -> bytes:
    """The line a balance prints (with CR LF); ``ident`` selects the 22-character format."""
    # Positions 3-10 hold the value; position 2 only when it needs 9 characters.
    body = f"{sign or ' '}{number.rjust(9)} {(unit or '').ljust(3)}"
    if len(body) != SHORT:
        raise ValueError(f"{number!r} {unit!r} does not fit a 16-character print line")
    head = "" if ident is None else ident.ljust(ID_WIDTH)[:ID_WIDTH]
    return (head + body).encode("ascii") + b"\r\n"


def format_special(text: str, ident: str | None = None) -> bytes:
    """A special or error line: ``H``, ``L``, ``Err 02`` ... centred as printed."""
    body = f"   {text}".ljust(SHORT) if text.upper().startswith("ERR") else f"      {text}".ljust(SHORT)
    head = "" if ident is None else ident.ljust(ID_WIDTH)[:ID_WIDTH]
    return (head + body).encode("ascii") + b"\r\n"
