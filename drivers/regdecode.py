"""Exact decoding (and encoding, for simulators) of Modbus weighing and ambient registers.

Pure functions over register values keyed by (table, protocol address): no
I/O, no pymodbus. The maps themselves are ``drivers/regmap.py``.

Weights become integer µg, never floats:

* integer weights: ``counts × factor × unit`` in exact integer arithmetic
  (µg per count as a fraction), where ``factor`` is 10^-decimals (fixed, from a
  decimal-point register, or from status bits) or the map's Decimal ``factor``. A result finer than 1 µg is a
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from drivers.errors import ProtocolError
from drivers.regmap import _WIDTH, FIX_MAP, UNIT_UG, AmbientField, AmbientRegisterMap, ScaleRegisterMap

__all__ = [
    "ScaleRegisters", "AmbientValues", "decode_scale", "ScaleDecoder", "encode_scale",
    "decode_ambient", "encode_ambient", "float32_to_ug",
]


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
        # Every register a weighing reads, in the order of m.reads(): decode_flat
        # takes the values of those reads, concatenated.
        self.reads = m.reads()
        self._keys = [(t, a + i) for t, a, n in self.reads for i in range(n)]
        pos = {key: i for i, key in enumerate(self._keys)}
        self._needed = set(m.fields())  # the rest of a block are registers in between

        def where(table: str, address: int, width: int, order: str) -> list[int]:
            idx = [pos[(table, address + i)] for i in range(width)]
            return idx if order == "big" else idx[::-1]

        self._weight = where(w.table, w.address, _WIDTH[w.type], w.word_order)
        self._float = w.type == "float32"
        self._sign_bits = 16 * _WIDTH[w.type] if w.type.startswith("int") else 0
        self._status = where(s.table, s.address, _WIDTH[s.type], s.word_order) if s is not None else None
        bit = (lambda n: None if s is None or n is None else 1 << n)
        self._neg, self._stable = bit(s and s.negative), bit(s and s.stable)
        self._unstable, self._over = bit(s and s.unstable), bit(s and s.overload)
        self._under, self._err = bit(s and s.underload), bit(s and s.error)
        self._dp_reg = (pos[(m.decimal_point_register.table, m.decimal_point_register.address)]
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
        """Registers keyed by (table, address), each one the map names checked to be
        a 16-bit value."""
        return self.decode_flat([_get(regs, key) if key in self._needed else 0 for key in self._keys])

    def decode_flat(self, words: Sequence[int]) -> ScaleRegisters:
        """The values of :attr:`reads`, concatenated, as the link returns them
        (16-bit integers; the link guarantees it)."""
        st = 0
        if self._status is not None:
            for i in self._status:
                st = (st << 16) | words[i]
        raw = 0
        for i in self._weight:
            raw = (raw << 16) | words[i]
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
                dp = words[self._dp_reg]
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
