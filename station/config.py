"""Strict, typed station configuration (one TOML file).

Unknown keys, wrong types and missing files are errors that name the file,
the key path and the fix. Simulation is never implied: a device is simulated
only when its table says ``simulate = true``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from station.errors import ConfigError
from station.instruments.plugins.base import DeviceConfig
from station.instruments.registry import KINDS, PLUGINS

DEFAULT_PATH = Path("/etc/station/station.toml")
ENV_VAR = "STATION_CONFIG"

PositiveInt = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class StationSection(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    state_dir: Path
    key_file: Path
    sim_key_file: Path | None = None
    min_free_mb: PositiveInt = 64  # MiB (2**20 bytes): below this much free disk, no measuring
    # Acked records are kept this long for replays, then pruned; 0 prunes at once.
    retention_days: Annotated[float, Field(ge=0, le=3650)] = 30
    # The outbox's bound, counting records the central system has not accepted:
    # when either is reached the station refuses to measure (it never drops one).
    max_outbox_records: PositiveInt = 100_000
    max_outbox_mb: PositiveInt = 1024


class SessionSection(_Strict):
    operator: str | None = None
    lot: str | None = None


DeviceName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
# Validated by the `driver` key: each plug-in's own table schema (instruments/plugins/).
AnyDevice = Annotated[
    Union[tuple(p.config for p in PLUGINS.values())],  # noqa: UP007 - built from the registry
    Field(discriminator="driver"),
]


class CycleSection(_Strict):
    detect_threshold_ug: PositiveInt = 5_000
    removal_threshold_ug: PositiveInt = 2_000
    stable_readings: Annotated[int, Field(ge=1, le=20)] = 2
    stable_tolerance_ug: Annotated[int, Field(ge=0)] = 200
    settle_timeout_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    poll_interval_s: Annotated[float, Field(gt=0, le=5)] = 0.1
    uncertainty_ug: Annotated[int, Field(ge=0)] = 1_000

    @model_validator(mode="after")
    def _thresholds(self) -> "CycleSection":
        if self.removal_threshold_ug > self.detect_threshold_ug:
            raise ValueError("removal_threshold_ug must not exceed detect_threshold_ug")
        return self


class MqttSection(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(gt=0, lt=65536)] = 1883
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    # Lowered at run time to the broker's Receive Maximum (mosquitto: 20), and said so once.
    window: Annotated[int, Field(ge=1, le=1000)] = 20
    # Published records the central system has not acked within this are sent again.
    ack_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 30.0
    # The retained status is republished at least this often (and on every change).
    status_heartbeat_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Mutual TLS: all three or none. The certificate's CN (or a SAN) must be station.id.
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    # One line `username:password`, mode 0600; for brokers that want a password too.
    password_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.ca_file is not None

    @model_validator(mode="after")
    def _tls_files(self) -> "MqttSection":
        given = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k) is not None]
        if given and len(given) != 3:
            missing = sorted({"ca_file", "cert_file", "key_file"} - set(given))
            raise ValueError(f"mutual TLS needs ca_file, cert_file and key_file together; missing {', '.join(missing)}")
        return self


class Config(_Strict):
    station: StationSection
    session: SessionSection = SessionSection()
    devices: dict[DeviceName, AnyDevice]
    cycle: CycleSection = CycleSection()
    mqtt: MqttSection = MqttSection()
    source: Path = Path("<memory>")

    @property
    def simulated(self) -> bool:
        """Any simulated instrument makes the whole station's records simulated."""
        return any(d.simulate for d in self.devices.values())

    def devices_of(self, kind: str) -> dict[str, DeviceConfig]:
        return {name: d for name, d in self.devices.items() if d.kind == kind}

    @property
    def scale_name(self) -> str:
        return next(iter(self.devices_of("scale")))

    @model_validator(mode="after")
    def _device_kinds(self) -> "Config":
        scales = self.devices_of("scale")
        if len(scales) != 1:
            raise ValueError(f"devices: exactly one scale is needed to detect stones, found {len(scales)}"
                             + (f" ({', '.join(scales)})" if scales else ""))
        if len(self.devices_of("ambient")) > 1:
            raise ValueError("devices: at most one ambient sensor")
        return self

    @property
    def signing_key_file(self) -> Path:
        """Simulated records are signed with their own key, never the station's."""
        if self.simulated:
            assert self.station.sim_key_file is not None  # enforced by _sim_key
            return self.station.sim_key_file
        return self.station.key_file

    @model_validator(mode="after")
    def _sim_key(self) -> "Config":
        if self.simulated and self.station.sim_key_file is None:
            raise ValueError("station.sim_key_file is required when a device has simulate = true")
        if self.station.sim_key_file is not None and self.station.sim_key_file == self.station.key_file:
            raise ValueError("station.sim_key_file must differ from station.key_file")
        return self


def resolve_path(cli_value: str | os.PathLike | None) -> Path:
    """--config FILE, else $STATION_CONFIG, else /etc/station/station.toml."""
    if cli_value:
        return Path(cli_value)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return DEFAULT_PATH


def load(path: Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist",
            f"pass --config FILE or set ${ENV_VAR}; start from config/station.example.toml",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}", "check the path and its permissions") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})", "fix the syntax at that line") from exc
    return parse(raw, path)


def parse(raw: dict[str, Any], path: Path) -> Config:
    if "source" in raw:
        raise ConfigError(f"{path}: source: unknown key", "remove it")
    try:
        cfg = Config.model_validate({**_paths_as_path(raw, path.parent), "source": path})
    except ValidationError as exc:
        problems = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"{path}: " + problems[0][0], problems[0][1], problems=[(path, *p) for p in problems]) from None
    return cfg


_PATH_KEYS = {
    ("station", "state_dir"), ("station", "key_file"), ("station", "sim_key_file"),
    ("mqtt", "ca_file"), ("mqtt", "cert_file"), ("mqtt", "key_file"), ("mqtt", "password_file"),
}


def _paths_as_path(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Expand ~ and make relative paths relative to the config file, so a
    config directory can be moved as a whole (e.g. `station demo --keep`)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for section, key in _PATH_KEYS:
        value = out.get(section, {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str):
            p = Path(value).expanduser()
            out[section][key] = p if p.is_absolute() else (base / p).resolve()
    return out


def _describe(err: dict[str, Any]) -> tuple[str, str]:
    loc = [str(x) for x in err["loc"]]
    kind = err["type"]
    table: type[BaseModel] | None = None
    driver = ""
    if len(loc) >= 3 and loc[0] == "devices" and loc[2] in PLUGINS:
        driver = loc.pop(2)  # pydantic puts the union tag in the path; people never wrote it
        table = PLUGINS[driver].config
    key = ".".join(loc) or "(top level)"
    if kind == "union_tag_invalid":
        got = err.get("ctx", {}).get("tag", "")
        close = difflib.get_close_matches(got, PLUGINS, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{key}.driver: unknown driver {got!r}", f"{hint}(drivers: {_driver_list()})"
    if kind == "union_tag_not_found":
        return f"{key}.driver: required key is missing", f"add `driver = ...`, one of: {_driver_list()}"
    if loc[-1:] == ["[key]"]:
        return (f"{'.'.join(loc[:-1])}: device name {err.get('input')!r} is not allowed",
                "name devices with lower-case letters, digits, - and _ (e.g. [devices.scale])")
    if kind == "literal_error" and table is not None and loc[-1] == "kind":
        want = table.model_fields["kind"].annotation.__args__[0]
        return (f"{key}: the {driver} driver is a {want}, not {err.get('input')!r}",
                f'set kind = "{want}" (kinds: {", ".join(KINDS)})')
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], table)
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else "remove it"
        return f"{key}: unknown key", f"{hint} (allowed here: {', '.join(allowed)})"
    if kind == "missing" and loc == ["devices"]:
        return ("devices: required section is missing",
                "add a [devices.<name>] table per instrument, at least a scale: [devices.scale] with kind = \"scale\" "
                "(see config/station.example.toml)")
    if kind == "missing":
        if table is None and loc[-1] in _allowed_keys(loc[:-1]) and _section_model(loc) is not None:
            return f"{key}: required section is missing", f"add a [{key}] table (see config/station.example.toml)"
        return f"{key}: required key is missing", f"add `{loc[-1]} = ...` (see config/station.example.toml)"
    msg = err["msg"].removeprefix("Value error, ")
    if key == "(top level)" and msg.startswith("devices: "):
        key, msg = "devices", msg.removeprefix("devices: ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {msg}{shown}", "correct the value; config/station.example.toml documents every key"


def _driver_list() -> str:
    return ", ".join(f"{name} ({p.kind})" for name, p in PLUGINS.items())


def _section_model(loc: list[str]) -> type[BaseModel] | None:
    """The schema of the table at ``loc``, or None when ``loc`` is not a table."""
    model: type[BaseModel] = Config
    for part in loc:
        ann = getattr(model.model_fields.get(part), "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _allowed_keys(loc: list[str], table: type[BaseModel] | None = None) -> list[str]:
    model = table if table is not None else _section_model(loc)
    return [k for k in model.model_fields if k != "source"] if model else []
