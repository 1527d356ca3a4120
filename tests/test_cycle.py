"""The measurement cycle driving the real driver against the simulator over a pty."""

from __future__ import annotations

import time

import pytest

from drivers.sim.mtsics import MtSicsSimulator
from station.config import BalanceConfig, CycleSection
from station.session.cycle import MeasurementCycle, State
from station.instruments.scale import BalanceDevice


@pytest.fixture
def rig(tmp_path):
    sim = MtSicsSimulator(link_path=str(tmp_path / "balance"), settle_s=0.2).start()
    dev = BalanceDevice(BalanceConfig(driver="mtsics", port=str(tmp_path / "balance"), simulate=True,
                                      reply_timeout_s=0.5), retry_s=0.1)
    dev.connect()
    events = []
    yield sim, dev, events
    dev.close()
    sim.stop()


def _cycle(dev, events, **cfg):
    return MeasurementCycle(dev, CycleSection(poll_interval_s=0.02, **cfg), on_event=events.append)


def _settling(sim, dev, events, settle_s, mass=150_000):
    """A cycle with a stone on the pan that is still settling."""
    sim.settle_s = settle_s
    cycle = _cycle(dev, events)
    sim.place(mass)
    _run_until(cycle, lambda r: cycle.state is State.SETTLING)
    return cycle


def _run_until(cycle, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cycle.step()
        if predicate(result):
            return result
        time.sleep(0.02)
    raise AssertionError(f"cycle stuck in {cycle.state}")


def test_a_stone_settles_into_one_exact_measurement(rig):
    sim, dev, events = rig
    cycle = _cycle(dev, events)
    sim.place(99_800)
    m = _run_until(cycle, lambda r: r is not None)
    assert m.mass_ug == 99_800
    assert m.flags == ("reweigh:0.50ct",)
    assert m.readings[0].raw == ("> S", "< S S     0.0998 g")  # value right-aligned in 10 columns
    assert [e.kind for e in events] == ["detected"]
    assert cycle.state is State.AWAIT_REMOVAL
    sim.remove()
    _run_until(cycle, lambda r: cycle.state is State.IDLE)


def test_dynamic_readings_are_never_recorded(rig):
    sim, dev, events = rig
    sim.settle_s = 60  # never stable
    cycle = _cycle(dev, events, settle_timeout_s=0.5)
    sim.place(150_000)
    _run_until(cycle, lambda r: any(e.kind == "aborted" for e in events))
    assert "did not settle" in events[-1].message
    assert cycle.state is State.AWAIT_REMOVAL


def test_stone_removed_while_settling(rig):
    sim, dev, events = rig
    cycle = _settling(sim, dev, events, settle_s=60)
    sim.remove()
    _run_until(cycle, lambda r: cycle.state is State.IDLE)
    assert events[-1].kind == "aborted"


def test_garbage_aborts_the_stone_and_the_cycle_recovers(rig):
    sim, dev, events = rig
    cycle = _settling(sim, dev, events, settle_s=1.0)
    sim.inject("garbage")
    results = []
    _run_until(cycle, lambda r: results.append(r) or cycle.state is State.AWAIT_REMOVAL)
    assert all(r is None for r in results)
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["detected", "fault", "recovered"]
    assert "aborted" in events[1].message


def test_unplug_is_a_fault_until_the_balance_returns(rig):
    sim, dev, events = rig
    cycle = _cycle(dev, events)
    sim.unplug()
    _run_until(cycle, lambda r: cycle.state is State.FAULT)
    for _ in range(5):
        cycle.step()
        time.sleep(0.05)
    assert cycle.state is State.FAULT
    sim.replug()
    _run_until(cycle, lambda r: cycle.state is State.AWAIT_REMOVAL)
    _run_until(cycle, lambda r: cycle.state is State.IDLE)


def test_overload_aborts_once_without_reconnecting(rig):
    sim, dev, events = rig
    cycle = _cycle(dev, events)
    sim.place(250_000_000)  # 250 g on a 220 g balance
    _run_until(cycle, lambda r: any(e.kind == "aborted" for e in events))
    for _ in range(10):
        assert cycle.step() is None
    aborted = [e for e in events if e.kind == "aborted"]
    assert len(aborted) == 1 and "overload" in aborted[0].message
    assert not any(e.kind in ("fault", "recovered") for e in events)
    sim.remove()
    _run_until(cycle, lambda r: cycle.state is State.IDLE)
