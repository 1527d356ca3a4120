"""`station sim spectrometer` as a real subprocess, on each protocol, driven by our drivers."""

import json

import pytest
from stationproc import Proc, station, station_cmd

from drivers.modbus_link import ModbusLink
from drivers.serial_link import SerialLink
from drivers.spectro_modbus import ModbusSpectrometer
from drivers.spectro_serial import SerialSpectrometer


def start(*args: str) -> tuple[Proc, dict]:
    proc = Proc(station_cmd("sim", "spectrometer", "--json", "--speed", "50", *args))
    proc.wait_for(r"^\{", timeout=20)
    info = json.loads(next(line for line in proc.lines if line.startswith("{")))
    return proc, info


@pytest.mark.parametrize("protocol", ["serial", "modbus-tcp", "modbus-rtu", "modbus-rtu-pty"])
def test_each_protocol_serves_a_spectrum_and_takes_control_commands(tmp_path, protocol):
    pty = protocol in ("serial", "modbus-rtu-pty")
    protocol = protocol.removesuffix("-pty")
    extra = ("--link", str(tmp_path / "usb-spectro")) if pty else ()
    proc, info = start("--protocol", protocol, "--serial", "SPX0000777", *extra)
    assert info["protocol"] == protocol and info["serial"] == "SPX0000777"
    ctl = station("sim", "control", info["control"], "stone", "A1", "natural")
    assert ctl.returncode == 0 and json.loads(ctl.stdout) == {"ok": True}
    if protocol == "serial":
        assert info["port"] == str(tmp_path / "usb-spectro")
        spec = SerialSpectrometer(SerialLink(info["port"], baudrate=115200, timeout=0.5))
    elif pty:
        assert info["port"] == str(tmp_path / "usb-spectro")
        spec = ModbusSpectrometer(ModbusLink(info["port"], baudrate=115200, timeout=1.0))
    else:
        assert info["port"].startswith("tcp://" if protocol == "modbus-tcp" else "socket://")
        spec = ModbusSpectrometer(ModbusLink(info["port"], timeout=1.0))
    assert spec.identify().serial == "SPX0000777"
    spec.set_lamp(True)
    assert spec.acquire().shape == (2048,)
    spec.close()
    status = json.loads(station("sim", "control", info["control"], "status").stdout)
    assert status["stone"] == {"id": "A1", "kind": "natural"} and status["acquisitions"] == 1
    proc.stop()
    assert proc.proc.returncode == 0


def test_link_is_refused_for_modbus():
    out = station("sim", "spectrometer", "--protocol", "modbus-tcp", "--link", "/tmp/x")
    assert out.returncode == 1 and "--link is for --protocol serial or modbus-rtu" in out.stderr
