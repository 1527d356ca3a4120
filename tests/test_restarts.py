"""States a person can reach: a crash with a stone on the pan, a second
instance on the same config. Real processes, real pty simulator, real broker."""

from __future__ import annotations

import signal

from stationproc import Proc, child_env, station, station_cmd, write_config
from test_e2e import run_station


def _setup(tmp_path, sim, mosquitto):
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    return cfg


def _exported(cfg, tmp_path, name="export") -> list:
    out = tmp_path / name
    assert station("records", "export", "--config", str(cfg), str(out)).returncode == 0
    return sorted(out.glob("*.cose"))


def test_kill_9_with_a_recorded_stone_on_the_pan_records_it_once(tmp_path, sim, mosquitto):
    cfg = _setup(tmp_path, sim, mosquitto)
    st = run_station(cfg)
    sim.control.place(150_000)
    st.wait_for(r"Recorded #1: ")
    st.proc.send_signal(signal.SIGKILL)  # the stone stays on the pan
    st.proc.wait(10)

    again = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
    again.wait_for(r"already recorded as #1\. Remove it")
    sim.control.noise(100)  # a live pan: the session keeps polling, and must not weigh it again
    sim.control.place(150_100)
    sim.control.place(150_000)
    sim.control.remove()
    again.wait_for(r"Pan empty")
    assert again.count(r"Recorded #") == 0
    sim.control.place(120_000)  # the next stone is recorded as #2
    again.wait_for(r"Recorded #2: .*120000 µg")
    again.stop()
    assert len(_exported(cfg, tmp_path)) == 2


def test_kill_9_while_settling_asks_to_place_the_stone_again(tmp_path, sim, mosquitto):
    cfg = _setup(tmp_path, sim, mosquitto)
    st = run_station(cfg)
    sim.control.drift(5000)  # never settles
    sim.control.place(150_000)
    st.wait_for(r"Stone detected")
    st.proc.send_signal(signal.SIGKILL)
    st.proc.wait(10)
    sim.control.drift(0)

    again = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
    again.wait_for(r"on the pan at start-up and was NOT recorded\. Remove it, then place it again")
    sim.control.remove()
    again.wait_for(r"Pan empty")
    sim.control.place(150_000)
    again.wait_for(r"Recorded #1: ")
    again.stop()
    assert len(_exported(cfg, tmp_path)) == 1


def test_a_second_instance_on_the_same_config_refuses_at_once(tmp_path, sim, mosquitto):
    cfg = _setup(tmp_path, sim, mosquitto)
    first = run_station(cfg)
    second = station("run", "--config", str(cfg), timeout=20)
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"another station is already running on {tmp_path / 'state'} (pid {first.proc.pid})" in lines[0]
    assert "Fix:" in lines[0]
    assert first.proc.poll() is None  # the first one is untouched
    sim.control.place(130_000)
    first.wait_for(r"Recorded #1")
