"""Register maps and exact decoding for Modbus weighing transmitters and ambient sensors.

Pure functions over register values: no I/O, no pymodbus. Registers are
written in the vendors' 1-based notation: 4xxxx (or 4xxxxx) is a holding
register at protocol address N - 40001 (N - 400001), 3xxxx an input register
at N - 30001. ``mbpoll -r`` uses the same 1-based numbers without the prefix.

Weights become integer µg, never floats:

* integer weights: ``counts × factor × unit`` in ``Decimal``, where ``factor``
  is 10^-decimals (fixed, from a decimal-point register, or from status bits)
  or an explicit Decimal ``factor``. A result finer than 1 µg is a
  ``ProtocolError`` (the map or the decimal point is wrong), never rounded.
* float32 weights (the rounding rule): the IEEE-754 value is taken exactly
  (``Decimal(float)``), multiplied by the unit in µg, rounded to 1 µg with
  ROUND_HALF_EVEN, then, if the map gives ``readability_ug``, to the nearest
  multiple of it, again half-even. NaN and infinities are ``ProtocolError``.

Every decoding error is a :class:`drivers.errors.ProtocolError` (no transcript:
the driver adds it).
"""

from __future__ import annotations

import math
import struct
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.errors import ProtocolError

__all__ = [
    "Register", "ScaleRegisterMap", "AmbientRegisterMap", "ScaleRegisters", "AmbientValues",
    "decode_scale", "ScaleDecoder", "encode_scale", "decode_ambient", "encode_ambient", "load_map",
    "float32_to_ug", "UNIT_UG", "MAP_DIR",
]

UNIT_UG = {"mg": 1_000, "g": 1_000_000, "kg": 1_000_000_000, "ct": 200_000}
MAP_DIR = Path(__file__).resolve().parent.parent / "config" / "regmaps"
FIX_MAP = "check the register map against the transmitter's manual (weight type, word order, decimals)"
_WIDTH = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


class Register(_Strict):
    """A register in 1-based vendor notation: 4xxxx holding, 3xxxx input."""

    # "register" as a field name would shadow ABCMeta.register on the model class.
    number: int = Field(alias="register")

    @model_validator(mode="after")
    def _notation(self) -> Register:
        _split(self.number)
        return self

    @property
    def table(self) -> Literal["holding", "input"]:
        return _split(self.number)[0]

    @property
    def address(self) -> int:
        return _split(self.number)[1]


def _split(n: int) -> tuple[Literal["holding", "input"], int]:
    for base, table in ((400001, "holding"), (300001, "input"), (40001, "holding"), (30001, "input")):
        top = base + (65535 if base > 100000 else 9998)
        if base <= n <= top:
            return table, n - base  # type: ignore[return-value]
    raise ValueError(f"register {n} is not in 4xxxx/3xxxx notation (40001-49999, 30001-39999, "
                     "400001-465536 or 300001-365536)")


class WeightField(Register):
    type: Literal["int16", "uint16", "int32", "uint32", "float32"]
    word_order: Literal["big", "little"] = "big"  # big: high word first


class StatusBits(Register):
    type: Literal["uint16", "uint32"] = "uint16"
    word_order: Literal["big", "little"] = "big"
    stable: int | None = Field(None, ge=0, le=31)  # set when stable
    unstable: int | None = Field(None, ge=0, le=31)  # set while in motion
    overload: int | None = Field(None, ge=0, le=31)
    underload: int | None = Field(None, ge=0, le=31)
    negative: int | None = Field(None, ge=0, le=31)  # sign of an unsigned weight
    error: int | None = Field(None, ge=0, le=31)  # load-cell / ADC error
    decimal_point: list[int] | None = Field(None, min_length=2, max_length=2)  # [low bit, high bit], e.g. [27, 31]

    @model_validator(mode="after")
    def _bits(self) -> StatusBits:
        top = 15 if self.type == "uint16" else 31
        if self.stable is not None and self.unstable is not None:
            raise ValueError("give stable or unstable, not both")
        singles = [b for b in (self.stable, self.unstable, self.overload, self.underload,
                               self.negative, self.error) if b is not None]
        if self.decimal_point is not None:
            lo, hi = self.decimal_point
            if not 0 <= lo <= hi <= top:
                raise ValueError(f"decimal_point bits must satisfy 0 <= low <= high <= {top}")
        if any(b > top for b in singles):
            raise ValueError(f"a {self.type} status has bits 0..{top}")
        return self


class Command(Register):
    zero: int = Field(ge=0, le=0xFFFF)
    tare: int = Field(ge=0, le=0xFFFF)


class SerialField(Register):
    count: int = Field(ge=1, le=8)
    format: Literal["uint16", "uint32", "ascii"] = "uint32"

    @model_validator(mode="after")
    def _fits(self) -> SerialField:
        if self.format in ("uint16", "uint32") and self.count != _WIDTH[self.format]:
            raise ValueError(f"a {self.format} serial number takes {_WIDTH[self.format]} register(s)")
        return self


class ScaleRegisterMap(_Strict):
    name: str
    weight: WeightField
    unit: Literal["mg", "g", "kg", "ct"]
    # Exactly one way to scale integer counts (float32 needs none):
    decimals: int | None = Field(None, ge=0, le=9)
    factor: Decimal | None = None  # display units per count, e.g. "0.001"
    decimal_point_register: Register | None = None  # holds the number of decimals
    readability_ug: int | None = Field(None, ge=1)
    status: StatusBits | None = None
    command: Command | None = None
    serial: SerialField | None = None

    @model_validator(mode="after")
    def _scaling(self) -> ScaleRegisterMap:
        ways = [self.decimals is not None, self.factor is not None,
                self.decimal_point_register is not None,
                self.status is not None and self.status.decimal_point is not None]
        if self.weight.type == "float32":
            if any(ways):
                raise ValueError("a float32 weight is in display units already: drop decimals/factor")
        elif sum(ways) != 1:
            raise ValueError("give exactly one of decimals, factor, decimal_point_register or "
                             "status.decimal_point for an integer weight")
        if self.factor is not None and not (self.factor.is_finite() and self.factor > 0):
            raise ValueError("factor must be a positive decimal")
        return self

    def fields(self) -> list[tuple[str, int]]:
        """(table, address) of every register a weighing reads."""
        out = [(self.weight.table, self.weight.address + i) for i in range(_WIDTH[self.weight.type])]
        if self.status is not None:
            out += [(self.status.table, self.status.address + i) for i in range(_WIDTH[self.status.type])]
        if self.decimal_point_register is not None:
            out.append((self.decimal_point_register.table, self.decimal_point_register.address))
        return out

    def reads(self) -> list[tuple[str, int, int]]:
        """The fewest (table, address, count) block reads, each <= 125 registers."""
        return _blocks(self.fields())


def _blocks(fields: list[tuple[str, int]]) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []
    for table, addr in sorted(set(fields)):
        if out and out[-1][0] == table and addr - out[-1][1] < 125:
            t, start, _ = out[-1]
            out[-1] = (t, start, addr - start + 1)
        else:
            out.append((table, addr, 1))
    return out


class AmbientField(Register):
    type: Literal["int16", "uint16"] = "int16"
    decimals: int = Field(1, ge=0, le=2)


class AmbientRegisterMap(_Strict):
    name: str
    temperature: AmbientField
    humidity: AmbientField

    def reads(self) -> list[tuple[str, int, int]]:
        return _blocks([(f.table, f.address) for f in (self.temperature, self.humidity)])


# ---------------------------------------------------------------------------
# decoding


@dataclass(frozen=True)
class ScaleRegisters:
    value_ug: int
    stable: bool
    overload: bool
    underload: bool
    error: bool


@dataclass(frozen=True)
class AmbientValues:
    temperature_dc: int
    humidity_dpct: int


def _get(regs: Mapping[tuple[str, int], int], key: tuple[str, int]) -> int:
    v = regs.get(key)
    if v is None:
        raise ProtocolError(f"register {key[1]} ({key[0]}) was not read", FIX_MAP)
    if v.__class__ is not int or not 0 <= v <= 0xFFFF:
        raise ProtocolError(f"register {key[1]} holds {v!r}, not a 16-bit value", FIX_MAP)
    return v


def _words(regs, table: str, address: int, n: int, order: str) -> int:
    value = 0
    for i in (range(n) if order == "big" else range(n - 1, -1, -1)):
        value = (value << 16) | _get(regs, (table, address + i))
    return value


def _signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value >> (bits - 1) else value


def float32_to_ug(value: float, unit: str, readability_ug: int | None = None) -> int:
    """The documented float rule: exact Decimal of the float × unit, half-even to 1 µg,
    then half-even to ``readability_ug``."""
    if not math.isfinite(value):
        raise ProtocolError(f"the weight register holds {value} (not a number)", FIX_MAP)
    with localcontext() as ctx:
        ctx.prec = 80  # a float32 is exact in < 80 digits times any unit here
        ug = int((Decimal(value) * UNIT_UG[unit]).to_integral_value(ROUND_HALF_EVEN))
        if readability_ug and readability_ug > 1:
            steps = (Decimal(ug) / readability_ug).to_integral_value(ROUND_HALF_EVEN)
            ug = int(steps) * readability_ug
    return ug


def decode_scale(m: ScaleRegisterMap, regs: Mapping[tuple[str, int], int]) -> ScaleRegisters:
    """Registers keyed by (table, protocol address) -> exact weight and flags."""
    return ScaleDecoder(m).decode(regs)


class ScaleDecoder:
    """:func:`decode_scale` with the map's addresses and arithmetic worked out once
    (a driver polls many times a second; pydantic properties are not free)."""

    def __init__(self, m: ScaleRegisterMap) -> None:
        self.map = m
        w, s = m.weight, m.status
        self._weight = (w.table, w.address, _WIDTH[w.type], w.word_order)
        self._float = w.type == "float32"
        self._sign_bits = 16 * _WIDTH[w.type] if w.type.startswith("int") else 0
        self._status = (s.table, s.address, _WIDTH[s.type], s.word_order) if s is not None else None
        bit = (lambda n: None if s is None or n is None else 1 << n)
        self._neg, self._stable = bit(s and s.negative), bit(s and s.stable)
        self._unstable, self._over = bit(s and s.unstable), bit(s and s.overload)
        self._under, self._err = bit(s and s.underload), bit(s and s.error)
        self._dp_reg = ((m.decimal_point_register.table, m.decimal_point_register.address)
                        if m.decimal_point_register is not None else None)
        self._dp_bits = tuple(s.decimal_point) if s is not None and s.decimal_point is not None else None
        self._unit_ug = UNIT_UG[m.unit]
        self._factors: dict[int, tuple[int, int]] = {}  # decimals -> (numerator, denominator) of µg/count

    def _ug_per_count(self, dp: int) -> tuple[int, int]:
        """µg per count as an exact fraction (n, d): counts × n must be divisible by d."""
        got = self._factors.get(dp)
        if got is None:
            if self.map.factor is not None:
                n, d = (self.map.factor * self._unit_ug).as_integer_ratio()
            else:
                n, d = self._unit_ug, 10 ** dp
            g = math.gcd(n, d)
            got = self._factors[dp] = (n // g, d // g)
        return got

    def decode(self, regs: Mapping[tuple[str, int], int]) -> ScaleRegisters:
        st = _words(regs, *self._status) if self._status is not None else 0
        raw = _words(regs, *self._weight)
        m = self.map
        if self._float:
            value_ug = float32_to_ug(struct.unpack(">f", raw.to_bytes(4, "big"))[0], m.unit, m.readability_ug)
        else:
            counts = _signed(raw, self._sign_bits) if self._sign_bits else raw
            if self._neg is not None and st & self._neg:
                counts = -counts
            if m.factor is not None:
                dp = -1
            elif m.decimals is not None:
                dp = m.decimals
            elif self._dp_reg is not None:
                dp = _get(regs, self._dp_reg)
            else:
                lo, hi = self._dp_bits  # type: ignore[misc]
                dp = (st >> lo) & ((1 << (hi - lo + 1)) - 1)
            if dp > 9:
                raise ProtocolError(f"the transmitter reports {dp} decimals (at most 9 make sense)", FIX_MAP)
            n, d = self._ug_per_count(dp)
            value_ug, rem = divmod(counts * n, d)
            if rem:
                raise ProtocolError(f"{counts} counts at {n}/{d} µg per count is finer than 1 µg", FIX_MAP)
        if self._status is None:
            return ScaleRegisters(value_ug, True, False, False, False)
        stable = bool(st & self._stable) if self._stable is not None else not (
            self._unstable is not None and st & self._unstable)
        return ScaleRegisters(value_ug, stable, bool(self._over and st & self._over),
                              bool(self._under and st & self._under), bool(self._err and st & self._err))


def encode_scale(m: ScaleRegisterMap, value_ug: int, *, stable: bool = True, overload: bool = False,
                 underload: bool = False, error: bool = False, decimals: int | None = None
                 ) -> dict[tuple[str, int], int]:
    """The transmitter's side (simulators, round-trip tests). ``decimals`` is the
    decimal point a dynamic-decimals transmitter reports (default: the map's
    ``decimals``, or 4 for g)."""
    out: dict[tuple[str, int], int] = {}
    w, s = m.weight, m.status
    st = 0
    if w.type == "float32":
        raw = struct.unpack(">I", struct.pack(">f", value_ug / UNIT_UG[m.unit]))[0]
    else:
        if m.factor is not None:
            counts_d = Decimal(value_ug) / UNIT_UG[m.unit] / m.factor
        else:
            dp = m.decimals if m.decimals is not None else (decimals if decimals is not None else 4)
            counts_d = Decimal(value_ug).scaleb(dp) / UNIT_UG[m.unit]
            if m.decimal_point_register is not None:
                out[(m.decimal_point_register.table, m.decimal_point_register.address)] = dp
            elif m.status is not None and m.status.decimal_point is not None:
                st |= dp << m.status.decimal_point[0]
        counts = int(counts_d.to_integral_value(ROUND_HALF_EVEN))
        bits = 16 * _WIDTH[w.type]
        if w.type.startswith("uint"):
            if counts < 0 and s is not None and s.negative is not None:
                st |= 1 << s.negative
                counts = -counts
            raw = max(0, min(counts, (1 << bits) - 1))
        else:
            raw = max(-(1 << (bits - 1)), min(counts, (1 << (bits - 1)) - 1)) & ((1 << bits) - 1)
    _put(out, w.table, w.address, _WIDTH[w.type], w.word_order, raw)
    if s is not None:
        for flag, bit in ((stable, s.stable), (not stable, s.unstable), (overload, s.overload),
                          (underload, s.underload), (error, s.error)):
            if flag and bit is not None:
                st |= 1 << bit
        _put(out, s.table, s.address, _WIDTH[s.type], s.word_order, st)
    return out


def _put(out: dict, table: str, address: int, n: int, order: str, value: int) -> None:
    words = [(value >> (16 * (n - 1 - i))) & 0xFFFF for i in range(n)]
    if order == "little":
        words.reverse()
    for i, word in enumerate(words):
        out[(table, address + i)] = word | out.get((table, address + i), 0)


def _ambient_value(f: AmbientField, regs) -> int:
    raw = _get(regs, (f.table, f.address))
    v = _signed(raw, 16) if f.type == "int16" else raw
    scaled = Decimal(v).scaleb(1 - f.decimals)  # to tenths
    return int(scaled.to_integral_value(ROUND_HALF_EVEN))


def decode_ambient(m: AmbientRegisterMap, regs: Mapping[tuple[str, int], int]) -> AmbientValues:
    """°C × 10 and %RH × 10; a humidity outside 0..100 % is a ProtocolError."""
    t, h = _ambient_value(m.temperature, regs), _ambient_value(m.humidity, regs)
    if not 0 <= h <= 1000:
        raise ProtocolError(f"humidity register reads {h / 10} %RH (outside 0..100 %)", FIX_MAP)
    if not -400 <= t <= 1250:
        raise ProtocolError(f"temperature register reads {t / 10} °C (outside -40..125 °C)", FIX_MAP)
    return AmbientValues(t, h)


def encode_ambient(m: AmbientRegisterMap, temperature_dc: int, humidity_dpct: int) -> dict[tuple[str, int], int]:
    out = {}
    for f, v in ((m.temperature, temperature_dc), (m.humidity, humidity_dpct)):
        counts = int(Decimal(v).scaleb(f.decimals - 1))
        out[(f.table, f.address)] = counts & 0xFFFF
    return out


def load_map(name_or_path: str, kind: Literal["scale", "ambient"] = "scale"):
    """A map by file path, or by name from ``config/regmaps/`` ("laumas", "flintec")."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MAP_DIR / f"{name_or_path}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in MAP_DIR.glob("*.toml")))
        raise ValueError(f"no register map {name_or_path!r} (known: {known}; or give a .toml path)") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"register map {path}: {e}") from None
    model = ScaleRegisterMap if kind == "scale" else AmbientRegisterMap
    if isinstance(data.get("factor"), str):
        data["factor"] = Decimal(data["factor"])
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValueError(f"register map {path}: {e}") from None
