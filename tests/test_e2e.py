"""The whole station through its CLI, as subprocesses, against a real private
mosquitto and the MT-SICS simulator on a real pty. Records are checked with an
independent COSE implementation (cwt), not our own code."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import cbor2
import pytest
from cwt import COSE, COSEKey

from station.delivery.mqtt import MqttSubscriber
from stationproc import Proc, SimProcess, child_env, station, station_cmd, write_config

STONES = [99_800, 199_800, 123_400]


@pytest.fixture
def setup(tmp_path, sim, mosquitto):
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    jwk = json.loads(station("keys", "public", "--jwk", "--config", str(cfg)).stdout)
    return cfg, jwk


class Collector:
    def __init__(self, port: int, client_id: str = "test-consumer") -> None:
        self.payloads: list[bytes] = []
        self.lock = threading.Condition()
        self.sub = MqttSubscriber("127.0.0.1", port, "stations/+/records", client_id, self._on)

    def _on(self, payload: bytes, props) -> None:
        with self.lock:
            self.payloads.append(payload)
            self.lock.notify_all()

    def wait_distinct(self, n: int, timeout: float = 30.0) -> None:
        """The station is done once the BROKER has a record; the consumer gets it
        when it has reconnected (its own back-off), so wait for that, bounded."""
        with self.lock:
            self.lock.wait_for(lambda: len(set(self.payloads)) >= n, timeout)

    def distinct(self) -> list[bytes]:
        with self.lock:
            return list(dict.fromkeys(self.payloads))


def run_station(cfg: Path, *extra: str) -> Proc:
    p = Proc(station_cmd("run", "--config", str(cfg), *extra), env=child_env())
    p.wait_for(r"scale: .* serial SIM0000001")
    p.wait_for(r"Ready\. Place the first stone")
    return p


def weigh(sim: SimProcess, st: Proc, mass: int, n: int, last: bool = False) -> None:
    """Place a stone, wait until it is recorded, take it off (a station run with
    --max-stones exits after its last record, so there is no 'Pan empty' then)."""
    sim.control.place(mass)
    st.wait_for(r"Recorded #", n=n)
    sim.control.remove()
    if not last:
        st.wait_for(r"Pan empty", n=n)


def independent_check(records: list[bytes], jwk: dict) -> list[dict]:
    """cwt verifies each signature; hashlib checks the chain."""
    key = COSEKey.from_jwk(jwk)
    payloads = [cbor2.loads(COSE.new().decode(r, key)) for r in records]
    assert [p["seq"] for p in payloads] == list(range(1, len(records) + 1))
    assert payloads[0]["prev"] == bytes(32)
    for before, after, payload in zip(records, records[1:], payloads[1:]):
        assert payload["prev"] == hashlib.sha256(before).digest()
    return payloads


def test_stones_become_verified_records(tmp_path, sim, mosquitto, setup):
    cfg, jwk = setup
    consumer = Collector(mosquitto.port)
    consumer.sub.start()
    st = run_station(cfg, "--max-stones", str(len(STONES)))
    for i, mass in enumerate(STONES, 1):
        weigh(sim, st, mass, i, last=i == len(STONES))
    assert st.wait() == 0
    consumer.wait_distinct(len(STONES))
    consumer.sub.stop()

    payloads = independent_check(consumer.distinct(), jwk)
    readings = [p["readings"][0] for p in payloads]
    assert [r["value"] for r in readings] == STONES
    assert [r["carat"] for r in readings] == ["0.50", "1.00", "0.61"]
    assert all(p["simulated"] is True and p["operator"] == "op-test" for p in payloads)
    assert readings[0]["identity"]["serial"] == "SIM0000001"
    assert readings[0]["raw"][0] == "> S" and readings[0]["raw"][1].startswith("< S S")
    assert payloads[0]["flags"] == ["reweigh:0.50ct"]

    # Export: exact bytes, verified by our consumer too.
    out = tmp_path / "export"
    assert station("records", "export", "--config", str(cfg), str(out)).returncode == 0
    assert [(out / f"{i}.cose").read_bytes() for i in (1, 2, 3)] == consumer.distinct()
    ok = station("verify", "--config", str(cfg), str(out))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ALL VERIFIED" in ok.stdout


def test_one_flipped_bit_is_rejected_by_station_verify(tmp_path, sim, setup):
    cfg, jwk = setup
    (tmp_path / "station.jwk").write_text(json.dumps(jwk))
    st = run_station(cfg, "--max-stones", "2", "--drain-timeout", "1")
    weigh(sim, st, 150_000, 1)
    weigh(sim, st, 160_000, 2, last=True)
    st.wait()
    out = tmp_path / "export"
    station("records", "export", "--config", str(cfg), str(out))
    assert station("verify", "--key", str(tmp_path / "station.jwk"), str(out)).returncode == 0
    data = bytearray((out / "2.cose").read_bytes())
    data[len(data) // 2] ^= 0x04
    (out / "2.cose").write_bytes(bytes(data))
    res = station("verify", "--key", str(tmp_path / "station.jwk"), str(out))
    assert res.returncode != 0
    assert "BAD" in res.stdout and "VERIFICATION FAILED" in res.stdout


def test_broker_down_while_measuring_loses_nothing(tmp_path, sim, mosquitto, setup):
    cfg, jwk = setup
    consumer = Collector(mosquitto.port, client_id="durable-consumer")
    consumer.sub.start()
    st = run_station(cfg, "--max-stones", "4", "--drain-timeout", "30")
    weigh(sim, st, 110_000, 1)
    mosquitto.stop()  # by its PID; the station must keep measuring
    weigh(sim, st, 120_000, 2)
    weigh(sim, st, 130_000, 3)
    mosquitto.start()  # same port, persistent sessions
    weigh(sim, st, 140_000, 4, last=True)
    assert st.wait(timeout=60) == 0
    consumer.wait_distinct(4)
    consumer.sub.stop()
    records = consumer.distinct()
    payloads = independent_check(records, jwk)
    assert [p["readings"][0]["value"] for p in payloads] == [110_000, 120_000, 130_000, 140_000]
    assert "not yet delivered" not in st.output


def test_garbage_from_the_balance_aborts_the_stone(tmp_path, sim, setup):
    cfg, jwk = setup
    st = run_station(cfg, "--max-stones", "1", "--drain-timeout", "1")
    sim.control.place(150_000)
    st.wait_for(r"Stone detected")
    sim.control.fault("garbage")
    st.wait_for(r"scale fault")
    st.wait_for(r"scale is back .*NOT recorded: remove it, then place it again")
    assert st.count(r"Recorded #") == 0
    sim.control.remove()
    st.wait_for(r"Pan empty")
    weigh(sim, st, 123_400, 1, last=True)
    st.wait()
    out = tmp_path / "export"
    station("records", "export", "--config", str(cfg), str(out))
    records = sorted(out.glob("*.cose"))
    assert len(records) == 1
    payload = independent_check([records[0].read_bytes()], jwk)[0]
    assert payload["readings"][0]["value"] == 123_400


def test_unplugged_balance_is_reconnected_by_serial(tmp_path, sim, setup):
    cfg, _ = setup
    st = run_station(cfg, "--max-stones", "1", "--drain-timeout", "1")
    sim.control.unplug()
    st.wait_for(r"scale fault")
    sim.control.replug()
    st.wait_for(r"scale is back \(serial SIM0000001\)\. Place the next stone", timeout=30)
    weigh(sim, st, 101_000, 1, last=True)
    assert st.wait() == 0


def test_station_starts_without_its_balance_and_says_so(tmp_path, mosquitto):
    cfg = write_config(tmp_path, str(tmp_path / "no-such-balance"), mosquitto.port)
    station("keys", "init", "--config", str(cfg))
    st = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
    try:
        st.wait_for(r"scale not reachable yet: .*no-such-balance")
        assert st.proc.poll() is None
    finally:
        st.stop()
    assert "Traceback" not in st.output


def test_seq_is_monotonic_across_station_restarts(tmp_path, sim, mosquitto, setup):
    cfg, jwk = setup
    for n, mass in enumerate((105_000, 115_000), 1):
        st = run_station(cfg, "--max-stones", "1")
        st.wait_for(f"next record #{n},")
        weigh(sim, st, mass, 1, last=True)
        assert st.wait() == 0
    out = tmp_path / "export"
    station("records", "export", "--config", str(cfg), str(out))
    payloads = independent_check([(out / f"{i}.cose").read_bytes() for i in (1, 2)], jwk)
    assert [p["readings"][0]["value"] for p in payloads] == [105_000, 115_000]


def test_sim_control_from_the_command_line(sim):
    host, port = sim.control._sock.getpeername()[:2]
    res = station("sim", "control", f"{host}:{port}", "place", "99800")
    assert res.returncode == 0 and json.loads(res.stdout) == {"ok": True}
    assert sim.control.status()["mass_ug"] == 99_800
    bad = station("sim", "control", f"{host}:{port}", "explode")
    assert bad.returncode == 1 and "cannot run" in bad.stdout
