"""Spectrometer config tables: validated by their plug-ins, built into drivers that
reach a simulator through the station's instrument layer."""

import tomllib
from pathlib import Path

import pytest

from drivers.sim.spectro_modbus import ModbusSpectrometerSimulator
from drivers.sim.spectrometer import SerialSpectrometerSimulator
from station import config
from station.errors import ConfigError
from station.instruments.devices import open_instrument

ROOT = Path(__file__).resolve().parent.parent


def _parse(tmp_path, table: dict):
    raw = tomllib.loads((ROOT / "config/station.sim.toml").read_text())
    raw["devices"]["spectro"] = table
    return config.parse(raw, tmp_path / "s.toml")


def test_serial_table_defaults_to_115200_baud(tmp_path):
    cfg = _parse(tmp_path, {"kind": "spectrometer", "driver": "spectro-serial", "port": "/dev/ttyUSB1",
                            "serial": "SPX0000001"})
    d = cfg.devices["spectro"]
    assert (d.baudrate, d.ascii_transfer, d.serial) == (115200, False, "SPX0000001")
    assert cfg.devices_of("spectrometer") == {"spectro": d}


def test_modbus_table_checks_the_unit_id(tmp_path):
    table = {"kind": "spectrometer", "driver": "spectro-modbus", "port": "tcp://10.0.0.5:502", "unit_id": 248}
    with pytest.raises(ConfigError, match="devices.spectro.unit_id"):
        _parse(tmp_path, table)
    table["unit_id"] = 247
    assert _parse(tmp_path, table).devices["spectro"].unit_id == 247


def test_a_spectrometer_driver_with_the_wrong_kind_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        _parse(tmp_path, {"kind": "scale", "driver": "spectro-serial", "port": "/dev/ttyUSB1"})


def test_the_station_reaches_both_simulators(tmp_path):
    with SerialSpectrometerSimulator(tcp=("127.0.0.1", 0), speed=20) as serial_sim, \
            ModbusSpectrometerSimulator(framing="rtu", speed=20) as modbus_sim:
        for table in ({"kind": "spectrometer", "driver": "spectro-serial", "port": serial_sim.port,
                       "serial": serial_sim.serial, "simulate": True},
                      {"kind": "spectrometer", "driver": "spectro-modbus", "port": modbus_sim.port,
                       "serial": modbus_sim.serial, "simulate": True}):
            inst = open_instrument("spectro", _parse(tmp_path, table).devices["spectro"])
            try:
                assert inst.connect().serial == table["serial"]
                assert inst.call(inst.driver.acquire).shape == (2048,)
            finally:
                inst.close()
