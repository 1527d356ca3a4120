"""The Modbus scale driver against the Modbus simulators (real pymodbus server,
real ptys and sockets), and mbpoll as an independent master."""

import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from drivers.ambient import ModbusAmbientSensor
from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import AmbientSensor, Scale
from drivers.modbus_link import ModbusLink, shared_link
from drivers.modbus_scale import ModbusScale
from drivers.regmap import load_map
from drivers.sim.ambient import AmbientRegisters
from drivers.sim.control import SimControl
from drivers.sim.modbus_scale import ModbusScaleSimulator

SIM_SERIAL = "SIM0000001"


def make_sim(tmp_path, regmap="generic-float32", framing="rtu", **kw):
    kw.setdefault("settle_s", 0.1)
    kw.setdefault("seed", 1)
    if framing == "tcp":
        kw.setdefault("tcp", ("127.0.0.1", 0))
    elif "tcp" not in kw:
        kw.setdefault("link_path", str(tmp_path / "usb-FTDI_USB_RS485-if00-port0"))
    return ModbusScaleSimulator(regmap=regmap, framing=framing, **kw)


def make_scale(sim, regmap=None, **kw) -> ModbusScale:
    kw.setdefault("stable_timeout", 2.0)
    kw.setdefault("poll_s", 0.02)
    return ModbusScale(ModbusLink(sim.port, timeout=1.0, setting="devices.scale.port"),
                       load_map(regmap) if isinstance(regmap, str) else sim.map, **kw)


@pytest.mark.parametrize(("regmap", "framing"), [("laumas", "rtu"), ("flintec", "tcp"),
                                                 ("generic-float32", "rtu")])
def test_weigh_tare_zero_for_each_map(tmp_path, regmap, framing):
    with make_sim(tmp_path, regmap, framing) as sim:
        scale = make_scale(sim)
        assert isinstance(scale, Scale)
        ident = scale.identify()
        assert ident.model == sim.map.name
        sim.place(99_800)
        w = scale.weigh_stable()
        assert (w.value_ug, w.stable, w.unit) == (99_800, True, "reg")
        assert w.raw and all(line.startswith("< 4000") for line in w.raw)
        scale.tare()
        assert scale.weigh_stable().value_ug == 0
        sim.remove()
        assert scale.weigh_stable().value_ug == -99_800  # the tare taken off the pan
        scale.zero()
        assert scale.weigh_stable().value_ug == 0
        assert [code for _, (code, *_) in sim.writes] == [sim.map.command.tare, sim.map.command.zero]
        scale.close()


def test_raw_keeps_the_registers_in_vendor_notation(tmp_path):
    with make_sim(tmp_path, "laumas") as sim:
        scale = make_scale(sim)
        scale.identify()
        sim.place(10_000_000)  # 10 g = 100000 counts of 0.1 mg
        w = scale.weigh_stable()
        assert w.raw == ("< 40007..40011 = [0x0800, 0x0000, 0x0000, 0x0001, 0x86a0]",)
        sim.place(-10_000_000)
        w = scale.weigh_stable()
        assert w.value_ug == -10_000_000
        assert w.raw == ("< 40007..40011 = [0x0900, 0x0000, 0x0000, 0x0001, 0x86a0]",)
        scale.close()


def test_dynamic_readings_while_settling_then_stable(tmp_path):
    with make_sim(tmp_path, settle_s=1.0, motion_noise_ug=2_000) as sim:
        scale = make_scale(sim)
        scale.identify()
        sim.place(1_234_500)
        w = scale.weigh_now()
        assert not w.stable and abs(w.value_ug - 1_234_500) <= 2_000 and w.value_ug % 100 == 0
        assert scale.weigh_stable().value_ug == 1_234_500
        scale.close()


def test_not_stable_overload_underload(tmp_path):
    with make_sim(tmp_path, settle_s=30) as sim:
        scale = make_scale(sim, stable_timeout=0.2)
        scale.identify()
        sim.place(50_000)
        with pytest.raises(DeviceRefused, match="not stable within 0.2 s") as info:
            scale.weigh_stable()
        assert "draft shield" in info.value.fix
        sim.place(230_000_000)
        with pytest.raises(DeviceRefused, match="overload") as info:
            scale.weigh_now()
        assert "above capacity" in info.value.fix
        sim.place(-5_000_000)
        with pytest.raises(DeviceRefused, match="underload") as info:
            scale.weigh_now()
        assert "put the pan back" in info.value.fix
        scale.close()


def test_load_cell_error_bit_is_a_refusal(tmp_path):
    with make_sim(tmp_path, "laumas") as sim:
        scale = make_scale(sim)
        scale.identify()
        sim.inject("loadcell")
        with pytest.raises(DeviceRefused, match="load-cell error") as info:
            scale.weigh_now()
        assert "load-cell cable" in info.value.fix
        assert info.value.transcript[-1] == "< [0x0801, 0x0000, 0x0000, 0x0000, 0x0000]"
        sim.clear_faults()
        assert scale.weigh_now().value_ug == 0
        scale.close()


@pytest.mark.parametrize(("fault", "error", "words"), [
    ("crc", ProtocolError, "CRC or framing"),
    ("noreply", ReplyTimeout, "no reply from unit 1"),
    ("exception", DeviceRefused, r"exception 4 \(slave device failure\)"),
])
def test_register_faults(tmp_path, fault, error, words):
    with make_sim(tmp_path, "laumas") as sim:
        scale = make_scale(sim)
        scale.identify()
        sim.place(99_800)
        sim.inject(fault)
        with pytest.raises(error, match=words) as info:
            scale.weigh_now()
        assert info.value.transcript[-2] == "> FC03 @1 addr 6 x5"
        assert scale.weigh_stable().value_ug == 99_800
        scale.close()


def test_timeout_fault_for_a_while(tmp_path):
    with make_sim(tmp_path) as sim:
        scale = make_scale(sim)
        scale.identify()
        sim.inject("timeout", 5)
        with pytest.raises(ReplyTimeout):
            scale.weigh_now()
        sim.clear_faults()
        assert scale.weigh_now().stable


def test_unplug_and_replug_reidentifies_by_serial(tmp_path):
    with make_sim(tmp_path) as sim:
        scale = make_scale(sim)
        assert scale.identify().serial == SIM_SERIAL
        sim.unplug()
        assert not os.path.lexists(sim.port)
        with pytest.raises(LinkError, match="lost the connection"):
            scale.weigh_now()
        with pytest.raises(LinkError, match="does not exist") as info:
            scale.recover()
        assert "devices.scale.port" in info.value.fix
        sim.replug()
        assert scale.recover().serial == SIM_SERIAL
        sim.place(250_000)
        assert scale.weigh_stable().value_ug == 250_000
        scale.close()


def test_a_different_transmitter_after_replug_is_refused(tmp_path):
    first = make_sim(tmp_path).start()
    scale = make_scale(first)
    scale.identify()
    first.stop()
    with make_sim(tmp_path, serial="OTHER00042"):
        with pytest.raises(LinkError) as info:
            scale.recover()
    assert "serial OTHER00042" in info.value.what and f"expected {SIM_SERIAL}" in info.value.what
    scale.close()


def test_the_wrong_transmitter_is_never_weighed_on_a_shared_bus(tmp_path):
    ambient = AmbientRegisters()
    with make_sim(tmp_path, serial="OTHER00042", extra_units={2: ambient.bank()}) as sim:
        link = shared_link(sim.port, timeout=1.0)
        sensor = ModbusAmbientSensor(link, unit_id=2)
        sensor.identify()  # keeps the bus open
        scale = ModbusScale(link, sim.map, expected_serial=SIM_SERIAL)
        with pytest.raises(LinkError, match="a different transmitter"):
            scale.identify()
        with pytest.raises(LinkError, match="not identified"):
            scale.weigh_now()
        with pytest.raises(LinkError, match="not identified"):
            scale.tare()
        assert sim.writes == []
        scale.close()
        sensor.close()


def test_expected_serial_and_maps_without_serials(tmp_path):
    with make_sim(tmp_path) as sim:
        with pytest.raises(LinkError, match="expected B525"):
            make_scale(sim, expected_serial="B525073136").identify()
    with pytest.raises(ValueError, match="no serial-number registers"):
        ModbusScale(ModbusLink("tcp://127.0.0.1:1"), load_map("laumas"), expected_serial="X")
    with make_sim(tmp_path, "laumas") as sim:
        scale = make_scale(sim)
        assert scale.identify().serial == "unit 1"
        scale.close()


def test_tcp_unplug_replug(tmp_path):
    with make_sim(tmp_path, "flintec", "tcp") as sim:
        assert sim.port.startswith("tcp://127.0.0.1:")
        scale = make_scale(sim)
        scale.identify()
        sim.unplug()
        with pytest.raises(LinkError):
            scale.weigh_now()
        with pytest.raises(LinkError, match="cannot connect"):
            scale.recover()
        sim.replug()
        scale.recover()
        sim.place(1_000)
        assert scale.weigh_stable().value_ug == 1_000
        scale.close()


def test_wrong_map_names_the_map(tmp_path):
    with make_sim(tmp_path, "laumas") as sim:
        scale = make_scale(sim, regmap="flintec")  # 40025 is past the Laumas bank
        scale.identify()
        with pytest.raises(ProtocolError, match="illegal data address") as info:
            scale.tare()
        assert "register map" in info.value.fix
        scale.close()


def test_scale_and_ambient_sensor_share_one_bus(tmp_path):
    ambient = AmbientRegisters(temperature_dc=-52, humidity_dpct=455)
    with make_sim(tmp_path, extra_units={2: ambient.bank()}) as sim:
        link = shared_link(sim.port, timeout=1.0, gap_s=0.005)
        scale = ModbusScale(link, sim.map, unit_id=1, stable_timeout=2, poll_s=0.02)
        sensor = ModbusAmbientSensor(link, unit_id=2)
        assert isinstance(sensor, AmbientSensor)
        scale.identify()
        assert sensor.identify().serial == "unit 2"
        sim.place(99_800)
        assert scale.weigh_stable().value_ug == 99_800
        s = sensor.read()
        assert (s.temperature_dc, s.humidity_dpct) == (-52, 455)
        assert s.raw == ("< 30002..30003 = [0xffcc, 0x01c7]",)
        scale.close()
        assert link.is_open  # the sensor still uses the bus
        ambient.set(temperature_dc=230)
        assert sensor.read().temperature_dc == 230
        sensor.close()
        assert not link.is_open


def _start_cli(*args):
    code = ("import argparse, drivers.sim.cli as c; p = argparse.ArgumentParser(); "
            "c.add_arguments(p); raise SystemExit(c.run(p.parse_args()))")
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    assert ready, "simulator CLI printed nothing"
    return proc, json.loads(proc.stdout.readline())


def _stop(proc):
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def _mbpoll(*args) -> list[int]:
    out = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-1", "-t", "4", *args],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stdout + out.stderr
    # "[11]: \t34464 (-31072)": the value, then mbpoll's signed view of it
    return [line.split("\t")[-1].split()[0] for line in out.stdout.splitlines() if line.startswith("[")]


def test_mbpoll_reads_the_tcp_simulator(tmp_path):
    """An independent master (libmodbus) reads what the physics put on the pan."""
    proc, info = _start_cli("--protocol", "modbus-tcp", "--map", "laumas", "--settle", "0.05")
    try:
        host, port = info["port"][len("tcp://"):].rsplit(":", 1)
        with SimControl(*info["control"].rsplit(":", 1)) as ctl:
            assert ctl.place(10_000_000)["ok"]
            deadline = time.monotonic() + 10
            while not ctl.status()["stable"]:
                assert time.monotonic() < deadline, "the simulated pan never settled"
            # -r is 1-based like the vendor's 40007: status, command-free gross, net
            values = _mbpoll("-r", "7", "-c", "5", host, "-p", port)
            assert values == [str(1 << 11), "0", "0", "1", str(0x86A0)]
            assert ctl.fault("exception")["ok"]
            out = subprocess.run(["mbpoll", "-m", "tcp", "-a", "1", "-1", "-r", "7", "-c", "1", host, "-p", port],
                                 capture_output=True, text=True, timeout=20)
            assert "failure" in (out.stdout + out.stderr).lower()
    finally:
        _stop(proc)


def test_mbpoll_reads_a_float32_weight(tmp_path):
    proc, info = _start_cli("--protocol", "modbus-tcp", "--settle", "0")
    try:
        host, port = info["port"][len("tcp://"):].rsplit(":", 1)
        with SimControl(*info["control"].rsplit(":", 1)) as ctl:
            assert ctl.place(99_800)["ok"]
            values = _mbpoll("-t", "4:float", "-B", "-r", "1", "-c", "1", host, "-p", port)
            assert len(values) == 1 and abs(float(values[0]) - 0.0998) < 1e-6
            raw = _mbpoll("-r", "21", "-c", "5", host, "-p", port)  # the ASCII serial number
            assert b"".join(int(v).to_bytes(2, "big") for v in raw).decode() == SIM_SERIAL
    finally:
        _stop(proc)


def test_cli_rtu_pty_with_control_faults(tmp_path):
    link = tmp_path / "usb-Laumas-if00"
    proc, info = _start_cli("--protocol", "modbus-rtu", "--map", "laumas", "--link", str(link),
                            "--settle", "0.05")
    try:
        assert info["port"] == str(link) and info["serial"] == SIM_SERIAL
        with SimControl(*info["control"].rsplit(":", 1)) as ctl:
            scale = ModbusScale(ModbusLink(info["port"], timeout=1.0), load_map("laumas"), stable_timeout=2)
            scale.identify()
            assert ctl.place(99_800)["ok"]
            assert scale.weigh_stable().value_ug == 99_800
            assert ctl.fault("crc")["ok"]
            with pytest.raises(ProtocolError):
                scale.weigh_now()
            assert ctl.fault("noreply")["ok"]
            with pytest.raises(ReplyTimeout):
                scale.weigh_now()
            bad = ctl.send("fault sideways")
            assert bad["ok"] is False and "crc, noreply, exception or timeout S; or loadcell" in bad["error"]
            assert ctl.unplug()["ok"]
            with pytest.raises(LinkError):
                scale.weigh_now()
            assert ctl.replug()["ok"]
            scale.recover()
            assert scale.weigh_now().value_ug == 99_800
            scale.close()
    finally:
        _stop(proc)
    assert not link.exists()


def test_cli_refuses_a_bad_map():
    code = ("import argparse, drivers.sim.cli as c; p = argparse.ArgumentParser(); "
            "c.add_arguments(p); raise SystemExit(c.run(p.parse_args()))")
    out = subprocess.run([sys.executable, "-c", code, "--protocol", "modbus-rtu", "--map", "nope"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "no register map 'nope'" in out.stderr
    out = subprocess.run([sys.executable, "-c", code, "--protocol", "modbus-tcp", "--link", "/tmp/x"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 2 and "Modbus TCP has no serial port" in out.stderr


def test_devices_from_settings_share_one_bus(tmp_path):
    from drivers.modbus_devices import modbus_ambient, modbus_scale

    ambient = AmbientRegisters(temperature_dc=199, humidity_dpct=400)
    with make_sim(tmp_path, extra_units={2: ambient.bank()}) as sim:
        scale = modbus_scale(sim.port, unit_id=1, map="generic-float32", gap_ms=5,
                             expected_serial=SIM_SERIAL, stable_timeout_s=2)
        sensor = modbus_ambient(sim.port, unit_id=2, gap_ms=5)
        assert scale.link is sensor.link
        assert scale.identify().serial == SIM_SERIAL and sensor.identify().serial == "unit 2"
        sim.place(99_800)
        assert scale.weigh_stable().value_ug == 99_800
        assert sensor.read().temperature_dc == 199
        with pytest.raises(LinkError, match="different bus settings"):
            modbus_ambient(sim.port, unit_id=3, gap_ms=50)
        scale.close()
        sensor.close()
        # all users gone: the bus may be opened again with other settings
        again = modbus_ambient(sim.port, unit_id=2, gap_ms=50)
        assert again.link is not sensor.link
        assert again.identify().serial == "unit 2"
        again.close()


def test_devices_from_settings_name_the_keys(tmp_path):
    from drivers.modbus_devices import modbus_scale

    with pytest.raises(LinkError) as info:
        modbus_scale("/dev/serial/by-id/x", driver="modbus-tcp", setting="devices.big_scale")
    assert "devices.big_scale.port" in info.value.fix and "tcp://" in info.value.fix
    with pytest.raises(ValueError, match="modbus-rtu, modbus-tcp"):
        modbus_scale("tcp://127.0.0.1:1", driver="modbus-ascii")
    with pytest.raises(ValueError, match="no register map"):
        modbus_scale("tcp://127.0.0.1:1", driver="modbus-tcp", map="nope")
    with make_sim(tmp_path) as sim:
        scale = modbus_scale(sim.port, expected_serial="B525073136", setting="devices.big_scale")
        with pytest.raises(LinkError) as info:
            scale.identify()
        assert "devices.big_scale.serial" in info.value.fix
        scale.close()
