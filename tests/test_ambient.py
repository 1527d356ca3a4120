"""The Modbus RTU ambient sensor: driver against the simulator on a pty, control words, CLI."""

import json
import os
import select
import signal
import subprocess
import sys

import pytest

from drivers.ambient import ModbusAmbientSensor
from drivers.errors import LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import AmbientSensor
from drivers.modbus_link import ModbusLink
from drivers.regmap import AmbientRegisterMap
from drivers.sim.ambient import AmbientSimulator
from drivers.sim.control import SimControl


@pytest.fixture
def sim(tmp_path):
    with AmbientSimulator(link_path=str(tmp_path / "usb-1a86_USB_Serial-if00-port0")) as s:
        yield s


def make_sensor(port, **kw):
    return ModbusAmbientSensor(ModbusLink(port, timeout=1.0, setting="devices.ambient.port"), **kw)


def test_reads_exact_tenths(sim):
    sensor = make_sensor(sim.port)
    assert isinstance(sensor, AmbientSensor)
    ident = sensor.identify()
    assert ident.serial == "unit 1" and "SHT20" in ident.model
    s = sensor.read()
    assert (s.temperature_dc, s.humidity_dpct) == (215, 450)
    assert s.raw == ("< 30002..30003 = [0x00d7, 0x01c2]",)
    sim.set(temperature_dc=-105, humidity_dpct=1000)
    s = sensor.read()
    assert (s.temperature_dc, s.humidity_dpct) == (-105, 1000)
    sensor.close()


def test_control_words(sim):
    sensor = make_sensor(sim.port)
    sensor.identify()
    with SimControl(*sim.start_control()) as ctl:
        assert ctl.send("temp 23.4") == {"ok": True}
        assert ctl.send("humidity 61") == {"ok": True}
        assert (sensor.read().temperature_dc, sensor.read().humidity_dpct) == (234, 610)
        assert ctl.send("temp 23.45")["ok"] is False  # one decimal, like the registers
        assert ctl.send("humidity 100.1")["ok"] is False
        assert "no 'place'" in ctl.send("place 100")["error"]
        st = ctl.status()
        assert st["temperature_c"] == "23.4" and st["humidity_pct"] == "61.0"
        assert ctl.fault("stale")["ok"]
        with pytest.raises(ReplyTimeout, match="no reply from unit 1"):
            sensor.read()
        with pytest.raises(ReplyTimeout):
            sensor.read()  # still hung: stale lasts until clear
        assert ctl.clear()["ok"]
        assert sensor.read().temperature_dc == 234
        assert ctl.fault("crc")["ok"]
        with pytest.raises(ProtocolError, match="CRC"):
            sensor.read()
    sensor.close()


def test_unplug_replug_and_missing_port(sim, tmp_path):
    sensor = make_sensor(sim.port)
    sensor.identify()
    sim.unplug()
    with pytest.raises(LinkError):
        sensor.read()
    with pytest.raises(LinkError, match="does not exist") as info:
        sensor.recover()
    assert "devices.ambient.port" in info.value.fix
    sim.replug()
    assert sensor.recover().serial == "unit 1"
    assert sensor.read().humidity_dpct == 450
    sensor.close()


def test_wrong_unit_id_is_a_timeout(sim):
    sensor = make_sensor(sim.port, unit_id=5)
    with pytest.raises(ReplyTimeout, match="unit 5") as info:
        sensor.identify()
    assert "unit id" in info.value.fix and "devices.ambient.port" in info.value.fix


def test_a_holding_register_map_and_an_implausible_value(tmp_path):
    m = AmbientRegisterMap.model_validate({
        "name": "holding-style", "temperature": {"register": 40001}, "humidity": {"register": 40002, "type": "uint16"}})
    with AmbientSimulator(m, link_path=str(tmp_path / "amb"), humidity_dpct=0) as sim:
        sensor = make_sensor(sim.port, regmap=m)
        assert sensor.identify()
        sim.humidity_dpct = 1001  # a broken sensor, past the setter's check
        with pytest.raises(ProtocolError, match="outside 0..100") as info:
            sensor.read()
        assert info.value.transcript[-1].startswith("< [")
        sensor.close()


def test_station_sim_ambient_cli(tmp_path):
    link = tmp_path / "ambient"
    proc = subprocess.Popen([sys.executable, "-m", "station.cli", "sim", "ambient", "--link", str(link),
                             "--temp", "19.5", "--humidity", "52", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "station sim ambient printed nothing"
        info = json.loads(proc.stdout.readline())
        assert info["port"] == str(link) and info["serial"] == "unit 1"
        sensor = make_sensor(info["port"])
        sensor.identify()
        s = sensor.read()
        assert (s.temperature_dc, s.humidity_dpct) == (195, 520)
        with SimControl(*info["control"].rsplit(":", 1)) as ctl:
            assert ctl.send("temp -3.5")["ok"]
        assert sensor.read().temperature_dc == -35
        sensor.close()
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert not link.exists()
