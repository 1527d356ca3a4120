"""SbiBalance against the SBI simulator over real ptys (7O1 framing on both ends) and TCP."""

import os
import signal
import subprocess
import sys
import time

import pytest

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import Scale
from drivers.sbi import SbiBalance
from drivers.serial_link import SerialLink
from drivers.sim.control import SimControl
from drivers.sim.framing import Framing
from drivers.sim.sbi import SARTORIUS_DEFAULT, SbiSimulator
from simhelp import SIM_CLI, read_line, scale_sim, sim_fixtures, start_cli, start_cli_json, stop_cli

SIM_SERIAL = "0034309393"
WIRE = dict(baudrate=1200, bytesize=7, parity="O", stopbits=1, rtscts=True)


def make_sim(tmp_path, **kw) -> SbiSimulator:
    return scale_sim(SbiSimulator, tmp_path, "usb-Sartorius_balance-if00-port0", **kw)


def make_balance(port: str, wire=WIRE, **kw) -> SbiBalance:
    kw.setdefault("stable_timeout", 2.0)
    link = SerialLink(port, timeout=0.5, **({} if port.startswith("socket://") else wire))
    return SbiBalance(link, reply_timeout=0.4, poll_s=0.02, **kw)


sim, bal = sim_fixtures(make_sim, make_balance)


def test_identifies_through_the_by_id_symlink_with_sartorius_framing(sim, bal):
    assert isinstance(bal, Scale)
    assert os.path.islink(sim.port) and os.readlink(sim.port).startswith("/dev/pts/")
    assert (bal.identity.model, bal.identity.serial) == ("BCE224I-1S", SIM_SERIAL)
    assert sim.framing == SARTORIUS_DEFAULT and sim.last_mismatch is None


def test_settled_weight_is_exact(sim, bal):
    sim.place(99_800)
    w = bal.weigh_stable()
    assert (w.value_ug, w.stable, w.unit) == (99_800, True, "g")
    assert w.raw == ("> ESC P", "< +   0.0998 g  ")


def test_readings_are_dynamic_while_settling(tmp_path):
    with make_sim(tmp_path, settle_s=0.6, motion_noise_ug=2_000) as sim:
        bal = make_balance(sim.port)
        bal.connect()
        placed = time.monotonic()
        sim.place(1_234_500)
        w = bal.weigh_now()
        assert not w.stable and abs(w.value_ug - 1_234_500) <= 2_000
        assert w.raw[1].endswith("    ")  # no unit: the stability marker
        assert bal.weigh_stable().value_ug == 1_234_500
        assert time.monotonic() - placed >= 0.6  # weigh_stable waited for the settle
        bal.close()


def test_tare_zero_and_the_tare_key(sim, bal):
    sim.place(1_000_000)
    bal.tare()
    assert bal.weigh_stable().value_ug == 0
    sim.place(1_099_800)
    assert bal.weigh_stable().value_ug == 99_800
    sim.remove()
    assert bal.weigh_stable().value_ug == -1_000_000
    bal.zero()
    assert bal.weigh_stable().value_ug == 0
    key = make_balance(sim.port, tare_command=b"T")
    bal.close()
    key.connect()
    sim.place(10_000_000)
    key.tare()  # beyond the zero range (2 % of capacity) the TARE key tares
    assert key.weigh_stable().value_ug == 0
    sim.remove()
    assert key.weigh_stable().value_ug == -10_000_000
    key.close()


def test_zero_beyond_the_zero_range_is_refused(sim, bal):
    sim.place(50_000_000)  # 50 g: far beyond 2 % of capacity
    with pytest.raises(DeviceRefused, match=r"did not zero: it reads \+50.0000 g after ESC V") as info:
        bal.zero()
    assert "power-up zero" in info.value.fix


def test_long_format_and_other_units(tmp_path):
    with make_sim(tmp_path, long_format=True, unit="ct") as sim:
        bal = make_balance(sim.port)
        bal.connect()
        sim.place(99_800)
        w = bal.weigh_stable()
        assert (w.value_ug, w.unit, w.raw[1]) == (99_800, "ct", "< G     +   0.4990 ct ")
        bal.tare()
        assert bal.weigh_stable().raw[1] == "< N     +   0.0000 ct "
        sim.set_unit("mg")
        assert bal.weigh_stable().raw[1] == "< N     +      0.0 mg "
        bal.close()


def test_a_balance_set_to_oz_is_one_clear_refusal_not_a_resync(sim, bal):
    sim.place(99_800)
    sim.set_unit("oz")
    for _ in range(3):
        with pytest.raises(DeviceRefused) as info:
            bal.weigh_stable()
        assert info.value.what == "the balance is set to oz; set it to g or ct"
    assert "> ESC x1_" not in bal.link.transcript()[-6:] and bal.link.transcript()[-2:] == [
        "> ESC P", "< +   0.0035 oz "]


def test_not_stable_in_time_overload_and_underload(tmp_path):
    with make_sim(tmp_path, settle_s=30) as sim:
        bal = make_balance(sim.port, stable_timeout=0.3)
        bal.connect()
        sim.place(50_000)
        with pytest.raises(DeviceRefused, match=r"not stable within 0.3 s \(weigh\)"):
            bal.weigh_stable()
        with pytest.raises(DeviceRefused, match=r"not stable within 0.3 s \(zero\)"):
            bal.zero()
        sim.place(230_000_000)
        with pytest.raises(DeviceRefused, match=r"overload \(H\)") as info:
            bal.weigh_now()
        assert "above capacity" in info.value.fix
        sim.place(-5_000_000)  # pan lifted
        with pytest.raises(DeviceRefused, match=r"underload \(L\)"):
            bal.weigh_now()
        bal.close()


def test_wrong_framing_gets_no_answer_and_a_hint_naming_the_settings(sim):
    bal = make_balance(sim.port, wire={}, framing_setting="devices.scale.baudrate/parity")
    with pytest.raises(ReplyTimeout) as info:
        bal.connect()
    assert "devices.scale.baudrate/parity" in info.value.fix and "1200 baud" in info.value.fix
    assert sim.last_mismatch.startswith("baud rate 9600 (device: 1200)")
    assert not bal.link.is_open


def test_reopening_the_port_with_the_same_7o1_settings_works(sim):
    # A pty cannot carry 7 data bits or parity, and glibc refuses a tcsetattr
    # that changes only those; the simulator parks the speed so every open works.
    for _ in range(3):
        bal = make_balance(sim.port)
        assert bal.connect().serial == SIM_SERIAL
        bal.close()
    assert sim.last_mismatch is None


def test_a_9600_8n1_balance_works_with_matching_settings(tmp_path):
    with make_sim(tmp_path, framing=Framing()) as sim:
        bal = make_balance(sim.port, wire={})
        assert bal.connect().serial == SIM_SERIAL
        bal.close()


@pytest.mark.parametrize(("fault", "words"), [("garbage", "non-printable"), ("partial", "partial line")])
def test_line_faults_raise_protocol_error_then_resync(sim, bal, fault, words):
    sim.place(99_800)
    sim.inject(fault)
    with pytest.raises(ProtocolError, match=words) as info:
        bal.weigh_now()
    assert "> ESC P" in info.value.transcript
    assert bal.weigh_stable().value_ug == 99_800


def test_garbage_from_an_8_bit_balance(tmp_path):
    with make_sim(tmp_path, framing=Framing()) as sim:
        bal = make_balance(sim.port, wire={})
        bal.connect()
        sim.inject("garbage")
        with pytest.raises(ProtocolError, match="non-printable"):
            bal.weigh_now()
        assert bal.weigh_now().stable
        bal.close()


def test_timeout_fault_is_a_link_error_and_the_next_command_resyncs(sim, bal):
    sim.inject("timeout", 5.0)
    with pytest.raises(ReplyTimeout, match="no reply from .* within 0.4 s") as info:
        bal.weigh_now()
    assert info.value.transcript[-1] == "> ESC P"
    sim.clear_faults()
    assert bal.weigh_now().stable


def test_unplug_then_replug_reconnects_by_serial(sim, bal):
    sim.unplug()
    assert not os.path.lexists(sim.port)
    with pytest.raises(LinkError) as info:
        bal.weigh_now()
    assert "lost the connection" in info.value.what
    with pytest.raises(LinkError, match="does not exist"):
        bal.recover()
    sim.replug()
    assert bal.recover().serial == SIM_SERIAL
    sim.place(250_000)
    assert bal.weigh_stable().value_ug == 250_000


def test_a_different_balance_on_the_same_port_is_refused(tmp_path):
    first = make_sim(tmp_path).start()
    bal = make_balance(first.port)
    bal.connect()
    first.stop()
    with make_sim(tmp_path, serial="0099999999"):
        with pytest.raises(LinkError) as info:
            bal.recover()
        assert not bal.link.is_open
    assert "a different balance (serial 0099999999)" in info.value.what
    assert f"expected {SIM_SERIAL}" in info.value.what


def test_old_model_without_identification(tmp_path):
    with make_sim(tmp_path, identify=False) as sim:
        with pytest.raises(LinkError, match="did not answer ESC x1_"):
            make_balance(sim.port).connect()
        bal = make_balance(sim.port, identify=False, expected_serial="A1")
        assert bal.connect().serial == "A1"
        sim.place(99_800)
        assert bal.weigh_stable().value_ug == 99_800
        bal.close()


def test_tcp_mode_via_socket_url():
    with SbiSimulator(tcp=("127.0.0.1", 0), settle_s=0.05, seed=2) as sim:
        bal = make_balance(sim.port)
        assert bal.connect().serial == SIM_SERIAL
        sim.place(99_800)
        assert bal.weigh_stable().value_ug == 99_800
        sim.unplug()
        with pytest.raises(LinkError):
            bal.weigh_now()
        sim.replug()
        assert bal.recover().serial == SIM_SERIAL
        bal.close()


def test_commands_with_cr_lf_and_split_across_writes(sim):
    link = SerialLink(sim.port, timeout=0.5, **WIRE)
    with link:
        link.write(b"\x1bx2")
        link.write(b"_\r\n")
        assert link.read_line() == SIM_SERIAL.encode()
        link.write(b"junk\x1b\x1bP\r\n")
        assert link.read_line() == b"+   0.0000 g  "


def test_control_interface(sim, bal):
    with SimControl(*sim.start_control()) as ctl:
        assert ctl.place(99_800) == {"ok": True}
        assert bal.weigh_stable().value_ug == 99_800
        st = ctl.status()
        assert (st["serial"], st["unit"], st["format"], st["framing"]) == (SIM_SERIAL, "g", 16, "1200 7O1, RTS/CTS")
        assert ctl.unit("oz") == {"ok": True}
        with pytest.raises(DeviceRefused, match="set to oz"):
            bal.weigh_now()
        assert "unknown unit 'stone'" in ctl.unit("stone")["error"]
        assert ctl.unit("g") == {"ok": True}
        assert ctl.fault("garbage") == {"ok": True}
        with pytest.raises(ProtocolError):
            bal.weigh_now()


def test_standalone_sim_cli_protocol_sbi(tmp_path):
    link = tmp_path / "balance"
    proc, info = start_cli_json("--protocol", "sbi", "--link", str(link), "--settle", "0.05", "--long-format")
    try:
        assert info["port"] == str(link) and info["serial"] == SIM_SERIAL
        host, port = info["control"].rsplit(":", 1)
        with SimControl(host, int(port)) as ctl:
            assert ctl.place(99_800)["ok"]
            bal = make_balance(info["port"])
            assert bal.connect().serial == SIM_SERIAL
            assert bal.weigh_stable().raw[1] == "< G     +   0.0998 g  "
            assert ctl.unplug()["ok"] and ctl.replug()["ok"]
            assert bal.recover().serial == SIM_SERIAL
            bal.close()
    finally:
        err = stop_cli(proc, check=False)
    assert proc.returncode == 0, err
    assert not link.exists()


def test_sim_cli_human_line_and_bad_unit():
    proc = start_cli("--protocol", "sbi", "--tcp", "127.0.0.1:0")
    try:
        line = read_line(proc, 10)
        assert line.startswith("Sartorius SBI balance simulator (1200 7O1, RTS/CTS, serial 0034309393) on ")
    finally:
        stop_cli(proc, signal.SIGINT, check=False)
    assert proc.returncode == 0
    bad = subprocess.run([sys.executable, "-c", SIM_CLI, "--protocol", "sbi", "--unit", "stone"],
                         capture_output=True, text=True, timeout=20)
    assert bad.returncode == 2 and "unknown unit 'stone'" in bad.stderr and "--unit" in bad.stderr
