"""Bad keys, bad state directories and a full disk: one line of cause and fix, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import pytest


from stationproc import Proc, child_env, station, station_cmd, write_config


def _one_line_error(res, *needles):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_key(tmp_path, sim, mosquitto):
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    _one_line_error(station("run", "--config", str(cfg), env=child_env()), "does not exist", "station keys init")


def test_key_readable_by_others(tmp_path, sim, mosquitto):
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    station("keys", "init", "--config", str(cfg))
    key = tmp_path / "keys" / "simulation.key"
    os.chmod(key, 0o644)
    _one_line_error(station("run", "--config", str(cfg), env=child_env()), "readable by group or others",
                    f"chmod 600 {key}")
    _one_line_error(station("keys", "public", "--config", str(cfg)), "chmod 600")


def test_missing_config_from_environment(tmp_path):
    res = station("run", env=child_env(STATION_CONFIG=str(tmp_path / "nope.toml")))
    _one_line_error(res, "nope.toml", "does not exist")


def test_unwritable_state_dir_refuses_to_start(tmp_path, sim, mosquitto):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    cfg.write_text(cfg.read_text().replace('state_dir = "state"', f'state_dir = "{blocker}/state"'))
    station("keys", "init", "--config", str(cfg))
    _one_line_error(station("run", "--config", str(cfg), env=child_env()), str(blocker))


def test_full_disk_refuses_to_measure(tmp_path, sim, mosquitto):
    # More free space than any disk has: the real statvfs check must refuse.
    cfg = write_config(tmp_path, sim.port, mosquitto.port, station_extra="min_free_mb = 1000000000")
    station("keys", "init", "--config", str(cfg))
    _one_line_error(station("run", "--config", str(cfg), env=child_env()), "free")


def test_operator_is_required(tmp_path, sim, mosquitto):
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    cfg.write_text(cfg.read_text().replace('operator = "op-test"\n', ""))
    station("keys", "init", "--config", str(cfg))
    _one_line_error(station("run", "--config", str(cfg), env=child_env()), "--operator")


def test_systemd_ready_and_watchdog(tmp_path, sim, mosquitto):
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    station("keys", "init", "--config", str(cfg))
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    st = Proc(station_cmd("run", "--config", str(cfg)),
              env=child_env(NOTIFY_SOCKET=str(sock_path), WATCHDOG_USEC="200000"))
    try:
        got = []
        while not ({"READY=1", "WATCHDOG=1"} <= set(got)):
            got.extend(sock.recv(4096).decode().splitlines())
        assert got.index("READY=1") < got.index("WATCHDOG=1")
    finally:
        st.stop()
        sock.close()


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB filesystem we can fill up (tests run as root, as CI does)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_disk_filling_up_stops_measuring_until_space_returns(tmp_path, sim, mosquitto, small_disk):
    cfg = write_config(tmp_path, sim.port, mosquitto.port, station_extra="min_free_mb = 3")
    cfg.write_text(cfg.read_text().replace('state_dir = "state"', f'state_dir = "{small_disk}/state"'))
    station("keys", "init", "--config", str(cfg))
    st = Proc(station_cmd("run", "--config", str(cfg), "--max-stones", "2"), env=child_env())
    st.wait_for(r"Ready\. Place the first stone")
    sim.control.place(111_000)
    st.wait_for(r"Recorded #1")
    sim.control.remove()
    st.wait_for(r"Pan empty")

    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    filler.write_bytes(bytes(free - 1024 * 1024))  # leave 1 MiB: below min_free_mb
    st.wait_for(r"Refusing to measure: .*free")
    sim.control.place(122_000)
    time.sleep(1.5)
    assert st.count(r"Stone detected") == 1 and st.count(r"Recorded #") == 1
    sim.control.remove()

    filler.unlink()
    st.wait_for(r"measuring resumes")
    sim.control.place(133_000)
    st.wait_for(r"Recorded #2: .*133000 µg")
    assert st.wait() == 0


@pytest.mark.parametrize("value, why", [
    ("-1", "must be 1 or more, got -1"),
    ("0", "must be 1 or more, got 0"),
    ("two", "expected a whole number of stones, got 'two'"),
])
def test_max_stones_below_one_is_refused_before_anything_starts(tmp_path, capsys, value, why):
    from station.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(tmp_path / "never-read.toml"), "--max-stones", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"station run: error: argument --max-stones: {why}" in err
    assert "Traceback" not in err


def test_max_stones_one_is_accepted(tmp_path, capsys):
    from station.cli import main

    # Gets past argument parsing: the next complaint is the missing config file.
    assert main(["run", "--config", str(tmp_path / "missing.toml"), "--max-stones", "1"]) == 1
    assert "missing.toml" in capsys.readouterr().err


def test_demo_stones_below_one_is_refused(capsys):
    from station.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["demo", "--stones", "0"])
    assert exc.value.code == 2
    assert "station demo: error: argument --stones: must be 1 or more, got 0" in capsys.readouterr().err
