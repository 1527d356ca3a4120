"""Fault injection on the station's side of delivery: the real `station run`
SIGKILLed mid-drain and restarted, and a network partition (a blackholing TCP
proxy) between the station's Publisher and the broker. `station consume` stores
into a real PostgreSQL; each test ends with every record there exactly once,
seq contiguous, the chain intact, and nothing unacked in the station's outbox."""

from __future__ import annotations

import os
import signal
import time

from consumerkit import chain, consumer, make_keys, write_trust
from faultkit import append, assert_all_acked, assert_central_holds, outbox_records, station_publisher, wait_until
from station import config
from station.app.service import outbox_path
from station.central.trust import trust_entry
from station.delivery.outbox import Outbox
from station.instruments.reading import DeviceIdentity, mass_reading
from station.records.chain import RecordWriter
from station.records.cose import Signer
from station.records.keys import load_private_key
from station.records.payload import RecordInput
from stationproc import Proc, child_env, station, station_cmd, write_config
from tcpproxy import BlackholeProxy

BACKLOG = 3000
KILLS = 10


def _seed(cfg: config.Config, n: int) -> Signer:
    """n records in the station's outbox, signed with its own (simulation) key, as `station run` would."""
    reading = mass_reading("scale", "mtsics", DeviceIdentity("M", "SN"), 99_800, True, ("> S",), "t")
    signer = Signer(load_private_key(cfg.signing_key_file))
    with Outbox(outbox_path(cfg)) as box:
        RecordWriter(box, signer, station_id=cfg.station.id, simulated=True,
                     head_dir=cfg.station.state_dir).write_batch([RecordInput("op", "lot", [reading])] * n)
    return signer


def test_station_run_sigkilled_10_times_mid_drain_and_restarted(sim, mosquitto, postgres, tmp_path):
    path = write_config(tmp_path, sim.port, mosquitto.port)
    with path.open("a") as f:  # [mqtt] is the config's last table
        f.write("ack_timeout_s = 1.0\nwindow = 10\n")
    assert station("keys", "init", "--config", str(path)).returncode == 0
    cfg = config.load(path)
    signer = _seed(cfg, BACKLOG)
    trust = tmp_path / "trust.toml"
    trust.write_text(trust_entry(cfg.station.id, {"simulation": [signer.public_key]}))
    db = postgres.create_db("stationkill")
    c = consumer(mosquitto.port, trust, db, "central-1")
    c.wait_for("consuming")
    run = station_cmd("run", "--config", str(path))
    box = Outbox(outbox_path(cfg))
    try:
        for k in range(KILLS):
            st = Proc(run, env=child_env())
            start = box.counts().acked
            wait_until(lambda: box.counts().acked >= start + 30, 30, lambda: f"{box.counts()}\n{st.output}")
            os.kill(st.proc.pid, signal.SIGKILL)  # mid-drain: marks and acks of the window half stored
            st.proc.wait()
            assert box.counts().acked < BACKLOG, f"drained before kill {k + 1}: not mid-stream"
        st = Proc(run, env=child_env())
        wait_until(lambda: box.counts().acked == BACKLOG, 30,
                   lambda: f"{box.counts()}\n{st.output}\n{c.output[-2000:]}")
        st.stop()
        assert st.proc.returncode == 0, st.output
    finally:
        box.close()
    c.stop()
    assert_all_acked(outbox_path(cfg), BACKLOG)
    assert_central_holds(db, cfg.station.id, outbox_records(outbox_path(cfg)))


def test_network_partition_between_station_and_broker_is_noticed_and_healed(mosquitto, postgres, tmp_path):
    keys = make_keys(tmp_path)
    db = postgres.create_db("partition")
    records = chain(keys["a"], 600)
    state = tmp_path / "state"
    state.mkdir()
    box = Outbox(state / "outbox.db")
    c = consumer(mosquitto.port, write_trust(tmp_path, keys), db, "central-1")  # the consumer is not cut off
    c.wait_for("consuming")
    events: list[tuple[float, str]] = []

    def seen(text: str, since: float) -> bool:
        return any(text in m and t >= since for t, m in list(events))

    with BlackholeProxy("127.0.0.1", mosquitto.port) as proxy:
        pub = station_publisher(proxy.port, state, keepalive=1,
                                on_event=lambda m: events.append((time.monotonic(), m)))
        try:
            append(box, records[:300], 1)
            wait_until(lambda: box.counts().acked >= 100, 15, lambda: f"{box.counts()} {events[-5:]}")
            proxy.blackhole()  # the cable is pulled: no FIN, no RST, nothing
            cut = time.monotonic()
            append(box, records[300:], 301)
            wait_until(lambda: seen("disconnected from", cut), 10, lambda: f"keepalive did not notice: {events[-5:]}")
            noticed = time.monotonic() - cut
            before = box.counts().acked
            assert before < 600, "the stream ended before the partition"
            # Still cut off: the publisher tries again through the dead link, gets no CONNACK,
            # gives that attempt up (keepalive again) and tries once more.
            tries = proxy.connections
            wait_until(lambda: proxy.connections >= tries + 2, 10, "no second reconnect attempt during the partition")
            assert box.counts().acked == before  # nothing crossed the partition
            assert pub.connected is False
            proxy.heal()
            healed = time.monotonic()
            assert healed - cut > 3.0  # a partition of a few seconds, not a blip
            assert pub.wait_drained(30, acked=True), (pub.last_error, box.counts(), events[-5:])
        finally:
            pub.stop(timeout=1)
            box.close()
    assert seen("connected to", healed), events[-5:]
    assert noticed < 5.0, f"the keepalive (1 s) took {noticed:.1f} s to notice the partition"
    c.stop()
    assert_all_acked(state / "outbox.db", 600)
    assert_central_holds(db, "S1", records)
