"""End to end for every scale protocol: `station run` against that scale's
simulator (its real wire protocol on a real pty or socket), records that
`station verify` accepts, with exact µg and the trade carat (0.499 → 0.50,
0.999 → 1.00). Checked with an independent COSE implementation (cwt)."""

from __future__ import annotations

import json

import pytest

from stationproc import MTSICS, Proc, SimProcess, child_env, station, station_cmd, write_config
from test_e2e import independent_check

STONES = [(99_800, "0.50", "0.499"), (199_800, "1.00", "0.999"), (123_400, "0.61", "0.617")]

# protocol -> (simulator arguments, device table; {port} is the simulator's port)
SCALES = {
    "mtsics": ((), MTSICS),
    "sbi": ((), """\
[devices.scale]
kind = "scale"
driver = "sbi"
port = "{port}"
simulate = true
serial = "SIM0000001"
baudrate = 1200
bytesize = 7
parity = "O"
rtscts = true
reply_timeout_s = 1.0
"""),
    "modbus-rtu": (("--map", "laumas"), """\
[devices.scale]
kind = "scale"
driver = "modbus-rtu"
port = "{port}"
map = "laumas"
simulate = true
reply_timeout_s = 1.0
"""),
    "modbus-tcp": (("--map", "generic-float32"), """\
[devices.scale]
kind = "scale"
driver = "modbus-tcp"
port = "tcp://{hostport}"
map = "generic-float32"
serial = "SIM0000001"
simulate = true
reply_timeout_s = 1.0
"""),
}
AMBIENT = """\
[devices.ambient]
kind = "ambient"
driver = "modbus-ambient"
port = "{port}"
simulate = true
reply_timeout_s = 0.5
"""


def _table(protocol: str, port: str) -> str:
    _, table = SCALES[protocol]
    return table.format(port=port, hostport=port.removeprefix("socket://").removeprefix("tcp://"))


@pytest.mark.parametrize("protocol", sorted(SCALES))
def test_station_records_exact_carats_on_every_scale_protocol(tmp_path, mosquitto, ambient, protocol):
    sim_args, _ = SCALES[protocol]
    link = None if protocol == "modbus-tcp" else tmp_path / "scale"
    sim = SimProcess(link, protocol=protocol, extra=sim_args)
    try:
        table = _table(protocol, sim.port) + "\n" + AMBIENT.format(port=ambient.port)
        cfg = write_config(tmp_path, sim.port, mosquitto.port, devices=table)
        assert station("config", "check", "--config", str(cfg)).returncode == 0
        assert station("keys", "init", "--config", str(cfg)).returncode == 0
        jwk = json.loads(station("keys", "public", "--jwk", "--config", str(cfg)).stdout)
        st = Proc(station_cmd("run", "--config", str(cfg), "--max-stones", str(len(STONES))), env=child_env())
        st.wait_for(r"Ready\. Place the first stone", timeout=30)
        for n, (mass, _, _) in enumerate(STONES, 1):
            sim.control.place(mass)
            st.wait_for(r"Recorded #", n=n)
            sim.control.remove()
            if n < len(STONES):
                st.wait_for(r"Pan empty", n=n)
        assert st.wait() == 0, st.output
    finally:
        sim.control.close()
        sim.stop()
    out = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(out)).returncode == 0
    verified = station("verify", "--config", str(cfg), str(out))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    payloads = independent_check([(out / f"{i}.cose").read_bytes() for i in range(1, len(STONES) + 1)], jwk)
    for payload, (mass, carat, raw) in zip(payloads, STONES):
        mass_reading = payload["readings"][0]
        assert (mass_reading["value"], mass_reading["carat"], mass_reading["carat_raw"]) == (mass, carat, raw)
        assert mass_reading["driver"] == protocol and payload["simulated"] is True and payload["v"] == 2
        amb = payload["ambient"]
        assert (amb["status"], amb["temperature_dc"], amb["humidity_dpct"]) == ("ok", 215, 453)
        assert amb["raw"]  # the registers behind the values
