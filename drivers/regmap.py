"""Register maps for Modbus weighing transmitters and ambient sensors (pydantic, strict).

Registers are written in the vendors' 1-based notation: 4xxxx (or 4xxxxx) is a
holding register at protocol address N - 40001 (N - 400001), 3xxxx an input
register at N - 30001. ``mbpoll -r`` uses the same 1-based numbers without the
prefix. Decoding the registers into exact values is ``drivers/regdecode.py``.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.units import UNIT_UG

__all__ = ["Register", "ScaleRegisterMap", "AmbientRegisterMap", "load_map", "UNIT_UG", "MAP_DIR", "FIX_MAP"]

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
