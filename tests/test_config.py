import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from station import config
from station.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILES = sorted((ROOT / "config").glob("*.toml"))


def test_config_dir_is_not_empty():
    assert {p.name for p in CONFIG_FILES} >= {"station.example.toml", "station.sim.toml"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = config.load(path)
    assert cfg.station.id
    assert cfg.devices[cfg.scale_name].kind == "scale"
    # a shipped example must say what it is for: its file name names its scale's driver family
    family = {"mtsics": "", "sbi": "sbi", "modbus-rtu": "modbus", "modbus-tcp": "modbus"}[cfg.devices[cfg.scale_name].driver]
    assert family in path.name


def test_example_is_real_hardware_and_sim_is_simulated():
    assert not config.load(ROOT / "config/station.example.toml").simulated
    sim = config.load(ROOT / "config/station.sim.toml")
    assert sim.simulated
    assert sim.signing_key_file == sim.station.sim_key_file != sim.station.key_file


def _raw():
    return tomllib.loads((ROOT / "config/station.sim.toml").read_text())


def test_typo_names_file_key_and_suggestion(tmp_path):
    raw = _raw()
    raw["devices"]["scale"]["prot"] = "x"
    with pytest.raises(ConfigError) as exc:
        config.parse(raw, tmp_path / "s.toml")
    msg = str(exc.value)
    assert "s.toml" in msg and "devices.scale.prot" in msg and "did you mean 'port'" in msg


def test_unknown_section_is_an_error(tmp_path):
    raw = _raw()
    raw["mqt"] = {"host": "x"}
    with pytest.raises(ConfigError, match="did you mean 'mqtt'"):
        config.parse(raw, tmp_path / "s.toml")


def test_wrong_type_is_an_error(tmp_path):
    raw = _raw()
    raw["devices"]["scale"]["baudrate"] = "9600"
    with pytest.raises(ConfigError, match="devices.scale.baudrate"):
        config.parse(raw, tmp_path / "s.toml")


def test_every_problem_is_reported(tmp_path):
    raw = _raw()
    raw["devices"]["scale"]["prot"] = "x"
    raw["mqtt"]["prt"] = 1
    with pytest.raises(ConfigError) as exc:
        config.parse(raw, tmp_path / "s.toml")
    assert len(exc.value.problems) == 2


def test_simulation_is_never_implied(tmp_path):
    raw = _raw()
    del raw["devices"]["scale"]["simulate"]
    assert not config.parse(raw, tmp_path / "s.toml").simulated


def test_simulation_needs_its_own_key(tmp_path):
    raw = _raw()
    del raw["station"]["sim_key_file"]
    with pytest.raises(ConfigError, match="sim_key_file is required"):
        config.parse(raw, tmp_path / "s.toml")
    raw = _raw()
    raw["station"]["sim_key_file"] = raw["station"]["key_file"]
    with pytest.raises(ConfigError, match="must differ"):
        config.parse(raw, tmp_path / "s.toml")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*STATION_CONFIG"):
        config.load(tmp_path / "nope.toml")


def test_bad_toml(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[station\nid=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(p)


def test_relative_paths_follow_the_config_file(tmp_path):
    p = tmp_path / "sub" / "station.toml"
    p.parent.mkdir()
    p.write_text((ROOT / "config/station.sim.toml").read_text().replace(
        '"~/.local/state/diamond-station/sim"', '"state"'))
    assert config.load(p).station.state_dir == p.parent / "state"


def test_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    assert config.resolve_path(None) == config.DEFAULT_PATH
    monkeypatch.setenv(config.ENV_VAR, str(tmp_path / "env.toml"))
    assert config.resolve_path(None) == tmp_path / "env.toml"
    assert config.resolve_path("cli.toml") == Path("cli.toml")


def _station(*args, env=None):
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, env=env)


def test_cli_config_check_ok_and_errors(tmp_path):
    ok = _station("config", "check", str(ROOT / "config/station.example.toml"))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text((ROOT / "config/station.sim.toml").read_text().replace("simulate = true", "simulat = true"))
    res = _station("config", "check", str(bad))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    assert "devices.scale.simulat" in res.stderr and "did you mean 'simulate'" in res.stderr
    missing = _station("config", "check", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1


def test_missing_section_and_key_are_named(tmp_path):
    raw = _raw()
    del raw["devices"]
    del raw["station"]["state_dir"]
    with pytest.raises(ConfigError) as exc:
        config.parse(raw, tmp_path / "s.toml")
    found = {what: fix for _, what, fix in exc.value.problems}
    assert "add a [devices.<name>] table" in found["devices: required section is missing"]
    assert "add `state_dir = ...`" in found["station.state_dir: required key is missing"]
