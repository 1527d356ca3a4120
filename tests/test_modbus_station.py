"""A Modbus scale and an ambient sensor under `station run`: unplug and replug
without a restart (the aborted stone is never recorded), and a sensor that
goes missing is a warning on every record, not a blocked desk."""

from __future__ import annotations

import cbor2

from stationproc import Proc, SimProcess, child_env, station, station_cmd, write_config
from test_scale_protocols import AMBIENT, _table


def _records(cfg, tmp_path) -> list[dict]:
    out = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(out)).returncode == 0
    assert station("verify", "--config", str(cfg), str(out)).returncode == 0
    return [cbor2.loads(cbor2.loads(p.read_bytes()).value[2]) for p in sorted(out.glob("*.cose"))]


def _start(tmp_path, mosquitto, ambient_sim, *extra) -> tuple:
    scale = SimProcess(tmp_path / "scale", protocol="modbus-rtu", extra=("--map", "generic-float32"))
    table = _table("modbus-rtu", scale.port).replace('map = "laumas"', 'map = "generic-float32"\nserial = "SIM0000001"')
    cfg = write_config(tmp_path, scale.port, mosquitto.port, devices=table + "\n" + AMBIENT.format(port=ambient_sim.port))
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    st = Proc(station_cmd("run", "--config", str(cfg), *extra), env=child_env())
    st.wait_for(r"Ready\. Place the first stone", timeout=30)
    return scale, cfg, st


def test_modbus_scale_unplugged_mid_stone_reconnects_and_records_nothing_for_it(tmp_path, mosquitto, ambient):
    scale, cfg, st = _start(tmp_path, mosquitto, ambient, "--max-stones", "1")
    try:
        scale.control.send("drift 3000")  # keeps it settling
        scale.control.place(150_000)
        st.wait_for(r"Stone detected")
        scale.control.unplug()
        st.wait_for(r"scale fault: .*aborted; nothing was recorded")
        scale.control.send("drift 0")
        scale.control.replug()
        st.wait_for(r"scale is back \(serial SIM0000001\)\. The stone on the pan was NOT recorded", timeout=30)
        assert st.count(r"Recorded #") == 0
        scale.control.remove()
        st.wait_for(r"Pan empty")
        scale.control.place(120_000)
        st.wait_for(r"Recorded #1: ")
        shown = scale.control.status()["reading_ug"]  # 120 mg plus the drift that built up before
        assert st.wait() == 0
    finally:
        scale.control.close()
        scale.stop()
    (record,) = _records(cfg, tmp_path)
    assert record["readings"][0]["value"] == shown


def test_a_missing_ambient_sensor_warns_and_the_desk_keeps_measuring(tmp_path, mosquitto, ambient):
    scale, cfg, st = _start(tmp_path, mosquitto, ambient, "--max-stones", "2")
    try:
        scale.control.place(110_000)
        st.wait_for(r"Recorded #1: ")
        scale.control.remove()
        st.wait_for(r"Pan empty")
        ambient.control.send("fault stale")  # the sensor hangs: no answers
        scale.control.place(130_000)
        st.wait_for(r"Recorded #2: ", timeout=30)
        assert st.wait() == 0
    finally:
        scale.control.close()
        scale.stop()
    first, second = _records(cfg, tmp_path)
    assert first["ambient"]["status"] == "ok"
    assert second["ambient"]["status"] == "stale"  # the reading from stone 1, with its own time
    assert second["ambient"]["temperature_dc"] == 215 and second["ambient"]["time"] == first["ambient"]["time"]
    assert "Warning: ambient sensor ambient" in st.output
