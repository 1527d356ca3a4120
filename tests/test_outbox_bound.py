"""A full outbox (counting records the central system has not accepted) refuses
new measurements, says so on the console and in the retained status, drops
nothing, and recovers once acks arrive. A real station process, a real
simulated balance, a real mosquitto and a tiny acking consumer."""

from __future__ import annotations

import json
import threading
import time

from ackconsumer import AckingConsumer
from station.delivery.mqtt import MessageProperties, MqttSubscriber
from stationproc import Proc, child_env, station, station_cmd, write_config

STATION = "TEST-DESK-01"


def test_full_outbox_refuses_then_recovers_when_acks_arrive(tmp_path, sim, mosquitto) -> None:
    cfg = write_config(tmp_path, sim.port, mosquitto.port, station_extra="max_outbox_records = 2")
    cfg.write_text(cfg.read_text().replace("[mqtt]\n", "[mqtt]\nack_timeout_s = 1.0\n"))
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    statuses: list[dict] = []
    seen = threading.Condition()

    def on_status(data: bytes, props: MessageProperties) -> None:
        with seen:
            statuses.append(json.loads(data))
            seen.notify_all()

    watch = MqttSubscriber(mosquitto.host, mosquitto.port, f"stations/{STATION}/status", "watch", on_status)
    watch.start()
    run = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
    run.wait_for(r"Ready\. Place the first stone")
    for n, mass in ((1, 111_000), (2, 122_000)):  # one below the bound still measures
        sim.control.place(mass)
        run.wait_for(rf"Recorded #{n}")
        sim.control.remove()
        run.wait_for(r"Pan empty", n)
    run.wait_for(r"Refusing to measure: the outbox is full: it holds 2 records \(station.max_outbox_records = 2\)")
    with seen:
        assert seen.wait_for(lambda: statuses and statuses[-1].get("state") == "refusing", 10), statuses[-1:]
        status = statuses[-1]
    assert "the outbox is full" in status["reason"] and status["outbox_depth"] == 2
    assert any("outbox is full" in a for a in status["alarms"])
    assert status["outbox"]["published"] == 2 and status["last_seq"] == 2 and status["stones"] == 2

    sim.control.place(133_000)
    time.sleep(1.5)  # a stone on the pan of a full station: not weighed, not recorded
    assert run.count(r"Stone detected") == 2 and run.count(r"Recorded #") == 2
    sim.control.remove()

    consumer = AckingConsumer(mosquitto.host, mosquitto.port, STATION, name="central").start()
    try:
        # The station re-sends unacked records after ack_timeout_s; the consumer may
        # also get them from the broker's queue: either way they are acked.
        run.wait_for(r"The outbox has room again; measuring resumes", timeout=15)
        sim.control.place(144_000)
        run.wait_for(r"Recorded #3: .*144000 µg")
        with seen:
            assert seen.wait_for(lambda: statuses[-1].get("state") == "measuring"
                                 and statuses[-1]["outbox"]["acked"] >= 2, 15), statuses[-1]
    finally:
        consumer.stop()
        watch.stop()
    run.stop()


def test_status_says_device_fault_while_the_balance_is_unplugged(tmp_path, sim, mosquitto) -> None:
    """It used to say "online" with the balance unplugged."""
    cfg = write_config(tmp_path, sim.port, mosquitto.port)
    assert station("keys", "init", "--config", str(cfg)).returncode == 0
    statuses: list[dict] = []
    seen = threading.Condition()

    def on_status(data: bytes, props: MessageProperties) -> None:
        with seen:
            statuses.append(json.loads(data))
            seen.notify_all()

    watch = MqttSubscriber(mosquitto.host, mosquitto.port, f"stations/{STATION}/status", "watch-2", on_status)
    watch.start()
    run = Proc(station_cmd("run", "--config", str(cfg)), env=child_env())
    try:
        run.wait_for(r"Ready\. Place the first stone")
        with seen:
            assert seen.wait_for(lambda: statuses[-1].get("state") == "measuring", 10), statuses[-1:]
            assert statuses[-1]["devices"] == {"scale": "ok"} and statuses[-1]["session"] == 1
        sim.control.unplug()
        run.wait_for(r"scale fault")
        with seen:
            assert seen.wait_for(lambda: statuses[-1].get("state") == "device fault", 10), statuses[-1:]
            last = statuses[-1]
        assert last["devices"]["scale"].startswith("fault: ") and last["reason"].startswith("scale: ")
        sim.control.replug()
        run.wait_for(r"scale is back", timeout=30)
        with seen:
            assert seen.wait_for(lambda: statuses[-1].get("state") == "measuring", 10), statuses[-1:]
            assert statuses[-1]["devices"] == {"scale": "ok"}
    finally:
        run.stop()
        watch.stop()
    with seen:
        assert seen.wait_for(lambda: statuses[-1] == {"state": "offline"}, 10)
