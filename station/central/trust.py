"""Which key may sign for which station, and whether it signs real or simulated records.

Three ways to build a trust store, from strongest to weakest binding:

* a trust file (`station verify --trust FILE`, TOML, format in docs/RECORDS.md):
  each key is bound in advance to one station ID and one kind;
* the station's own config (the default): its production key bound to its own
  station ID, its simulation key to the same ID as simulation;
* bare keys (`--key JWK`): bound on first use. The first record a key verifies
  fixes the station ID and the kind (its `simulated` value); every later record
  signed with that key must agree, within one run.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from station.errors import KeyFileError
from station.records.keys import kid_for, public_jwk, public_key_from_jwk

PRODUCTION, SIMULATION = "production", "simulation"
KINDS = (PRODUCTION, SIMULATION)


@dataclass(slots=True)
class Binding:
    key: Ed25519PublicKey
    station_id: str | None  # None: bound on first use
    kind: str | None  # PRODUCTION, SIMULATION, or None: bound on first use
    origin: str  # where the binding came from, for messages


class TrustStore:
    def __init__(self) -> None:
        self._by_kid: dict[str, Binding] = {}

    def __len__(self) -> int:
        return len(self._by_kid)

    def add(self, key: Ed25519PublicKey, station_id: str | None, kind: str | None, origin: str) -> None:
        kid = kid_for(key)
        seen = self._by_kid.get(kid)
        if seen is not None and (seen.station_id, seen.kind) != (station_id, kind):
            raise KeyFileError(
                f"key {kid} is bound twice: {_describe(seen)} ({seen.origin}) and "
                f"{_describe(Binding(key, station_id, kind, origin))} ({origin})",
                "a key belongs to exactly one station and one kind (production or simulation); remove one entry",
            )
        self._by_kid[kid] = Binding(key, station_id, kind, origin)

    def get(self, kid: str) -> Binding | None:
        return self._by_kid.get(kid)

    def check(self, kid: str, station_id: str, simulated: bool) -> str | None:
        """The problem with a verified record's claims, or None. Binds first-use keys."""
        b = self._by_kid[kid]
        if b.station_id is None:
            b.station_id = station_id
        elif b.station_id != station_id:
            return (f"signed with station {b.station_id}'s key {kid} but claims station_id {station_id!r} "
                    f"(a key may sign only for its own station)")
        kind = SIMULATION if simulated else PRODUCTION
        if b.kind is None:
            b.kind = kind
        elif b.kind == SIMULATION and kind != SIMULATION:
            return f"signed with station {station_id}'s simulation key {kid} but not marked simulated: true"
        elif b.kind == PRODUCTION and kind != PRODUCTION:
            return (f"signed with station {station_id}'s production key {kid} but marked simulated: true "
                    f"(a station signs simulated records only with its simulation key)")
        return None


def _describe(b: Binding) -> str:
    who = f"station {b.station_id}" if b.station_id else "any one station"
    return f"{who}, {b.kind or 'either kind'}"


def from_jwk_files(paths: list[Path]) -> TrustStore:
    from station.records.keys import load_public_jwk_file

    store = TrustStore()
    for p in paths:
        store.add(load_public_jwk_file(p), None, None, f"--key {p}")
    return store


def load_trust_file(path: Path) -> TrustStore:
    path = Path(path)
    fix = "see the trust-store format in docs/RECORDS.md; `station keys public --trust-entry` prints a station's entry"
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise KeyFileError(f"trust store {path} does not exist", fix) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read trust store {path}: {exc}", fix) from exc
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"trust store {path} is not valid TOML ({exc})", fix) from exc
    stations = doc.get("stations")
    if not isinstance(stations, dict) or not stations:
        raise KeyFileError(f"trust store {path} has no [stations.<id>] table", fix)
    store = TrustStore()
    for station_id, entry in stations.items():
        where = f"{path}: stations.{station_id}"
        if not isinstance(entry, dict):
            raise KeyFileError(f"{where} is not a table", fix)
        unknown = set(entry) - set(KINDS)
        if unknown:
            raise KeyFileError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}",
                               "only `production` and `simulation` lists are allowed")
        for kind in KINDS:
            items = entry.get(kind, [])
            if not isinstance(items, list):
                raise KeyFileError(f"{where}.{kind} is not a list", fix)
            for i, item in enumerate(items):
                store.add(_entry_key(item, path.parent, f"{where}.{kind}[{i}]"), station_id, kind, f"{where}.{kind}")
    return store


def _entry_key(item: object, base: Path, where: str) -> Ed25519PublicKey:
    from station.records.keys import load_public_jwk_file

    if isinstance(item, str):
        p = Path(item)
        return load_public_jwk_file(p if p.is_absolute() else base / p)
    if isinstance(item, dict):
        key = public_key_from_jwk(item)
        if "kid" in item and item["kid"] != kid_for(key):
            raise KeyFileError(f"{where}: kid {item['kid']} is not the thumbprint of its key ({kid_for(key)})",
                               "copy the entry again from `station keys public --trust-entry`")
        return key
    raise KeyFileError(f"{where} is neither a JWK file path nor an inline JWK table",
                       "write a path string or { kty = \"OKP\", crv = \"Ed25519\", x = \"...\" }")


def trust_entry(station_id: str, keys: dict[str, list[Ed25519PublicKey]]) -> str:
    """The TOML a station's operator hands to the central system."""
    lines = [f"[stations.{json.dumps(station_id)}]"]
    for kind in KINDS:
        jwks = [public_jwk(k) for k in keys.get(kind, [])]
        inline = ", ".join(
            "{ " + ", ".join(f"{name} = {json.dumps(j[name])}" for name in ("kty", "crv", "x", "kid")) + " }"
            for j in jwks
        )
        lines.append(f"{kind} = [{inline}]")
    return "\n".join(lines) + "\n"
