"""The driver against the MT-SICS simulator over real ptys and TCP sockets."""

import os
import signal
import subprocess
import sys
import time

import pytest

from drivers.errors import DeviceRefused, LinkError, ProtocolError
from drivers.mtsics import MtSicsBalance
from drivers.serial_link import SerialLink
from drivers.sim.control import SimControl
from drivers.sim.mtsics import MtSicsSimulator
from simhelp import SIM_CLI, read_line, scale_sim, sim_fixtures, start_cli, start_cli_json, stop_cli

SIM_SERIAL = "SIM0000001"


def make_sim(tmp_path, **kw) -> MtSicsSimulator:
    return scale_sim(MtSicsSimulator, tmp_path, "usb-Mettler_Toledo_balance-if00", **kw)


def make_balance(port: str, **kw) -> MtSicsBalance:
    return MtSicsBalance(SerialLink(port, timeout=0.5), reply_timeout=0.4, stable_timeout=2.0, **kw)


sim, bal = sim_fixtures(make_sim, make_balance)


def test_connect_identifies_through_the_by_id_symlink(sim, bal):
    assert os.path.islink(sim.port) and os.readlink(sim.port).startswith("/dev/pts/")
    assert bal.identity.serial == SIM_SERIAL
    assert bal.identity.model == "XS205DU Excellence 220.0090 g"


def test_settled_weight_is_exact(sim, bal):
    sim.place(99_800)
    w = bal.weigh_stable()
    assert (w.value_ug, w.stable, w.unit) == (99_800, True, "g")
    assert w.raw == ("> S", "< S S     0.0998 g")


def test_readings_are_dynamic_while_settling(tmp_path):
    with make_sim(tmp_path, settle_s=0.6, motion_noise_ug=2_000) as sim:
        bal = make_balance(sim.port)
        bal.connect()
        sim.place(1_234_500)
        w = bal.weigh_now()
        assert not w.stable and abs(w.value_ug - 1_234_500) <= 2_000
        assert w.raw[1].startswith("< S D ")
        start = time.monotonic()
        assert bal.weigh_stable().value_ug == 1_234_500  # S waits for the settle
        assert time.monotonic() - start > 0.3
        assert bal.weigh_now().stable
        bal.close()


def test_zero_then_remove_reads_negative(sim, bal):
    sim.place(1_000_000)
    bal.zero()
    assert bal.weigh_stable().value_ug == 0
    sim.remove()
    assert bal.weigh_stable().value_ug == -1_000_000


def test_noise_and_drift_stay_on_the_readability_grid(sim, bal):
    sim.place(500_000)
    sim.set_noise(300)
    values = {bal.weigh_stable().value_ug for _ in range(8)}
    assert all(v % 100 == 0 and abs(v - 500_000) <= 300 for v in values)
    sim.set_noise(0)
    sim.set_drift(2_000)
    first = bal.weigh_now().value_ug
    time.sleep(0.3)
    assert bal.weigh_now().value_ug > first


def test_not_stable_in_time_overload_and_underload(tmp_path):
    with make_sim(tmp_path, settle_s=30, stable_timeout_s=0.2) as sim:
        bal = make_balance(sim.port)
        bal.connect()
        sim.place(50_000)
        with pytest.raises(DeviceRefused, match=r"not stable in time \(S I\)") as info:
            bal.weigh_stable()
        assert "draft shield" in info.value.fix
        with pytest.raises(DeviceRefused, match=r"\(Z I\)"):
            bal.zero()
        sim.place(230_000_000)
        with pytest.raises(DeviceRefused, match="overload") as info:
            bal.weigh_now()
        assert "above capacity" in info.value.fix
        sim.place(-5_000_000)  # pan lifted
        with pytest.raises(DeviceRefused, match="underload"):
            bal.weigh_now()
        bal.close()


@pytest.mark.parametrize(("fault", "words"), [("garbage", "non-ASCII"), ("partial", "partial line")])
def test_line_faults_raise_protocol_error_then_resync(sim, bal, fault, words):
    sim.place(99_800)
    sim.inject(fault)
    with pytest.raises(ProtocolError, match=words) as info:
        bal.weigh_now()
    assert "> SI" in info.value.transcript
    assert bal.link.transcript()[-2:] == ["> @", f'< I4 A "{SIM_SERIAL}"']
    assert bal.weigh_stable().value_ug == 99_800


def test_timeout_fault_is_a_link_error_with_transcript(sim, bal):
    sim.inject("timeout", 5.0)
    with pytest.raises(LinkError, match="no reply from .* within 0.4 s") as info:
        bal.weigh_now()
    assert info.value.transcript[-1] == "> SI"
    assert "Last lines:" in str(info.value) and "> SI" in str(info.value)
    sim.clear_faults()
    assert bal.weigh_now().stable  # resyncs with @ first


def test_unplug_then_replug_reconnects_by_serial(sim, bal):
    sim.unplug()
    assert not os.path.lexists(sim.port)
    with pytest.raises(LinkError) as info:
        bal.weigh_now()
    assert "lost the connection" in info.value.what
    assert "reconnects automatically" in info.value.fix
    with pytest.raises(LinkError, match="does not exist") as info:
        bal.reconnect()
    assert "ls /dev/serial/by-id/" in info.value.fix
    sim.replug()
    assert bal.reconnect().serial == SIM_SERIAL
    sim.place(250_000)
    assert bal.weigh_stable().value_ug == 250_000


def test_a_different_balance_on_the_same_port_is_refused(tmp_path):
    first = make_sim(tmp_path).start()
    bal = make_balance(first.port)
    bal.connect()
    first.stop()
    with make_sim(tmp_path, serial="OTHER00042"):
        with pytest.raises(LinkError) as info:
            bal.reconnect()
        assert not bal.link.is_open
    msg = str(info.value)
    assert "a different balance (serial OTHER00042)" in msg and f"expected {SIM_SERIAL}" in msg


def test_expected_serial_is_checked_on_first_connect(sim):
    bal = make_balance(sim.port, expected_serial="B525073136")
    with pytest.raises(LinkError, match="serial SIM0000001"):
        bal.connect()


def test_missing_port_names_it(tmp_path):
    missing = str(tmp_path / "no-such-balance")
    with pytest.raises(LinkError) as info:
        MtSicsBalance(SerialLink(missing, timeout=0.5, setting="devices.scale.port")).connect()
    assert missing in info.value.what
    assert "devices.scale.port" in info.value.fix


def test_open_error_hints():
    import errno
    import socket

    import serial

    link = SerialLink("/dev/ttyUSB7")
    denied = link._open_error(serial.SerialException(errno.EACCES, "could not open port"))
    assert "permission denied" in denied.what and "dialout" in denied.fix
    gone = link._open_error(serial.SerialException(errno.ENOENT, "could not open port"))
    assert "/dev/ttyUSB7 does not exist" in gone.what and "by-id" in gone.fix
    # A real refused TCP connection: bind a port, release it, connect to it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LinkError, match=f"cannot connect to socket://127.0.0.1:{port}") as info:
        SerialLink(f"socket://127.0.0.1:{port}").open()
    assert "simulator is running" in info.value.fix
    with pytest.raises(LinkError, match="cannot use port"):
        SerialLink("bogus://x").open()


def test_tcp_mode_via_socket_url():
    with MtSicsSimulator(tcp=("127.0.0.1", 0), settle_s=0.05, seed=2) as sim:
        assert sim.port.startswith("socket://127.0.0.1:")
        bal = make_balance(sim.port)
        assert bal.connect().serial == SIM_SERIAL
        sim.place(99_800)
        assert bal.weigh_stable().value_ug == 99_800
        sim.unplug()
        with pytest.raises(LinkError):
            bal.weigh_now()
        with pytest.raises(LinkError, match="cannot connect"):
            bal.reconnect()
        sim.replug()
        assert bal.reconnect().serial == SIM_SERIAL
        assert bal.weigh_now().value_ug == 99_800
        bal.close()


def test_control_interface_in_process(sim, bal):
    with SimControl(*sim.start_control()) as ctl:
        assert ctl.place(99_800) == {"ok": True}
        assert bal.weigh_stable().value_ug == 99_800
        st = ctl.status()
        assert st["ok"] and st["mass_ug"] == 99_800 and st["serial"] == SIM_SERIAL
        assert ctl.fault("garbage") == {"ok": True}
        with pytest.raises(ProtocolError):
            bal.weigh_now()
        assert ctl.unit("oz") == {"ok": True}
        with pytest.raises(DeviceRefused, match="set to oz"):
            bal.weigh_now()
        assert ctl.unit("g") == {"ok": True}
        assert ctl.send("fault sideways")["ok"] is False
        assert ctl.send("place heavy")["ok"] is False
        assert "cannot run 'explode'" in ctl.send("explode")["error"]
        assert ctl.send("fault")["ok"] is False


def test_standalone_sim_cli(tmp_path):
    link = tmp_path / "balance"
    proc, info = start_cli_json("--protocol", "mtsics", "--link", str(link), "--settle", "0.05")
    try:
        assert info["port"] == str(link)
        host, port = info["control"].rsplit(":", 1)
        with SimControl(host, int(port)) as ctl:
            assert ctl.place(99_800)["ok"]
            bal = make_balance(info["port"])
            assert bal.connect().serial == SIM_SERIAL
            assert bal.weigh_stable().value_ug == 99_800
            assert ctl.unplug()["ok"]
            with pytest.raises(LinkError):
                bal.weigh_now()
            assert ctl.replug()["ok"]
            assert bal.reconnect().serial == SIM_SERIAL
            bal.close()
    finally:
        err = stop_cli(proc, check=False)
    assert proc.returncode == 0, err
    assert not link.exists()  # the by-id link goes away with the device


def test_sim_cli_human_line_and_bad_link_dir(tmp_path):
    proc = start_cli("--tcp", "127.0.0.1:0")
    try:
        line = read_line(proc, 10)
        assert "on socket://127.0.0.1:" in line and "control on 127.0.0.1:" in line
    finally:
        stop_cli(proc, signal.SIGINT, check=False)
    assert proc.returncode == 0
    bad = subprocess.run(
        [sys.executable, "-c", SIM_CLI, "--link", str(tmp_path / "missing-dir" / "bal")],
        capture_output=True, text=True, timeout=20,
    )
    assert bad.returncode == 1 and "cannot start the simulator" in bad.stderr
