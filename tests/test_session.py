"""The stone session against a deterministic fake scale and an injected clock.

Every threshold is tested on both sides of its boundary, so a `<` turned
into `<=` (or a dropped check) fails a test.
"""

from __future__ import annotations

from collections import deque

import pytest

from station.config import CycleSection
from station.errors import DeviceError, DeviceRefusal
from station.instruments.reading import AmbientStatus, DeviceIdentity, Reading, mass_reading
from station.session import events as ev
from station.session.stone import Measurement, Phase, StoneSession

CFG = CycleSection(detect_threshold_ug=5_000, removal_threshold_ug=2_000, stable_readings=2,
                   stable_tolerance_ug=200, settle_timeout_s=10.0, uncertainty_ug=1_000)
IDENT = DeviceIdentity("FakeScale", "SN-1")


def r(value: int, stable: bool = True) -> Reading:
    return mass_reading("scale", "fake", IDENT, value, stable, (f"< {value}",), "t")


class FakeScale:
    """Answers weigh_now from ``pan`` (or a queued script), weigh_stable from ``finals``."""

    name = "scale"

    def __init__(self) -> None:
        self.pan: Reading | Exception = r(0)
        self.script: deque[Reading | Exception] = deque()
        self.finals: deque[Reading | Exception] = deque()
        self.recover_result: DeviceIdentity | Exception = IDENT
        self.recovers = 0

    def weigh_now(self) -> Reading:
        item = self.script.popleft() if self.script else self.pan
        if isinstance(item, Exception):
            raise item
        return item

    def weigh_stable(self) -> Reading:
        item = self.finals.popleft() if self.finals else self.weigh_now()
        if isinstance(item, Exception):
            raise item
        return item

    def recover(self) -> DeviceIdentity:
        self.recovers += 1
        if isinstance(self.recover_result, Exception):
            raise self.recover_result
        return self.recover_result


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class Rig:
    def __init__(self, cfg: CycleSection = CFG, **kw) -> None:
        self.scale, self.clock, self.events = FakeScale(), Clock(), []
        self.session = StoneSession(self.scale, cfg, emit=self.events.append, clock=self.clock, **kw)

    def step(self) -> Measurement | None:
        return self.session.step()

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def ready(self) -> Rig:
        assert self.step() is None
        assert self.session.phase is Phase.IDLE
        return self

    def settle(self, value: int, n: int | None = None) -> Measurement | None:
        """Place ``value`` and poll until a measurement or ``n`` polls."""
        self.scale.pan = r(value)
        for _ in range(n or 10):
            m = self.step()
            if m is not None:
                return m
        return None


@pytest.fixture
def rig() -> Rig:
    return Rig().ready()


# -- detection and removal boundaries -------------------------------------------


def test_a_load_at_the_detect_threshold_is_not_a_stone(rig):
    rig.scale.pan = r(CFG.detect_threshold_ug)
    rig.step()
    assert rig.session.phase is Phase.IDLE
    rig.scale.pan = r(CFG.detect_threshold_ug + 1)
    rig.step()
    assert rig.session.phase is Phase.SETTLING
    assert isinstance(rig.events[-1], ev.StoneDetected) and rig.events[-1].mass_ug == CFG.detect_threshold_ug + 1


def test_pan_at_the_removal_threshold_is_not_empty(rig):
    m = rig.settle(150_000)
    rig.session.recorded(1, m)
    rig.scale.pan = r(CFG.removal_threshold_ug)
    rig.step()
    assert rig.session.phase is Phase.AWAIT_REMOVAL and rig.session.on_pan == 1
    rig.scale.pan = r(CFG.removal_threshold_ug - 1)
    rig.step()
    assert rig.session.phase is Phase.IDLE and rig.session.on_pan is None
    assert isinstance(rig.events[-1], ev.StoneRemoved)


def test_stone_removed_while_settling_is_not_recorded(rig):
    rig.scale.pan = r(150_000, stable=False)
    rig.step()
    rig.scale.pan = r(CFG.removal_threshold_ug)
    assert rig.step() is None
    assert rig.session.phase is Phase.SETTLING  # at the threshold: still on the pan
    rig.scale.pan = r(CFG.removal_threshold_ug - 1)
    assert rig.step() is None
    assert rig.session.phase is Phase.IDLE
    assert isinstance(rig.events[-1], ev.StoneAborted)


# -- settling -----------------------------------------------------------------------


def test_needs_exactly_stable_readings_agreeing(rig):
    rig.scale.pan = r(150_000)
    assert rig.step() is None  # detected
    assert rig.step() is None  # 1 of 2
    m = rig.step()  # 2 of 2 -> final S
    assert m is not None and m.mass_ug == 150_000
    assert m.readings[0].stable is True


def test_dynamic_readings_never_count_as_settled(rig):
    rig.scale.pan = r(150_000, stable=False)
    for _ in range(20):
        assert rig.step() is None
    assert rig.session.phase is Phase.SETTLING
    # one stable reading after a dynamic one starts the count from scratch
    rig.scale.script.extend([r(150_000), r(150_000, stable=False), r(150_000)])
    rig.scale.pan = r(150_000)
    assert rig.step() is None and rig.step() is None and rig.step() is None
    assert rig.step() is not None


def test_readings_within_tolerance_agree_beyond_do_not(rig):
    tol = CFG.stable_tolerance_ug
    rig.scale.pan = r(150_000)
    rig.step()
    rig.scale.script.extend([r(150_000), r(150_000 + tol + 1)])
    assert rig.step() is None and rig.step() is None  # second disagrees: count restarts at it
    rig.scale.script.append(r(150_000 + tol + 1 + tol))  # exactly tol away: agrees -> 2 of 2
    rig.scale.finals.append(r(150_000 + tol + 1 + tol))
    m = rig.step()
    assert m is not None and m.mass_ug == 150_000 + 2 * tol + 1


def test_final_stable_reading_that_disagrees_aborts_the_stone(rig):
    tol = CFG.stable_tolerance_ug
    rig.scale.finals.append(r(150_000 + tol + 1))
    assert rig.settle(150_000) is None
    assert rig.session.phase is Phase.AWAIT_REMOVAL
    aborted = rig.events[-1]
    assert isinstance(aborted, ev.StoneAborted) and "disagrees" in aborted.message
    assert "Nothing was recorded" in aborted.message


def test_final_stable_reading_exactly_at_tolerance_is_recorded(rig):
    tol = CFG.stable_tolerance_ug
    rig.scale.finals.append(r(150_000 - tol))
    m = rig.settle(150_000)
    assert m is not None and m.mass_ug == 150_000 - tol


def test_settle_timeout_boundary(rig):
    rig.scale.pan = r(150_000, stable=False)
    rig.step()
    rig.clock.t += CFG.settle_timeout_s
    rig.step()
    assert rig.session.phase is Phase.SETTLING  # exactly the timeout: still waiting
    rig.clock.t += 0.001
    rig.step()
    assert rig.session.phase is Phase.AWAIT_REMOVAL
    assert "did not settle within 10 s" in rig.events[-1].message


def test_reweigh_flags_near_ban_thresholds(rig):
    m = rig.settle(100_000 + CFG.uncertainty_ug)  # exactly e above 0.50 ct
    assert m.flags == ("reweigh:0.50ct",)
    rig.session.recorded(1, m)
    rig.scale.pan = r(0)
    rig.step()
    m = rig.settle(100_000 + CFG.uncertainty_ug + 200)
    assert m.flags == ()


# -- refusals and faults ---------------------------------------------------------------


def test_refusal_while_settling_aborts_once_without_reconnect(rig):
    rig.scale.pan = r(150_000, stable=False)
    rig.step()
    rig.scale.pan = DeviceRefusal("balance reports overload (S +)", "remove the load", ["> SI", "< S +"])
    for _ in range(5):
        rig.step()
    aborted = [e for e in rig.events if isinstance(e, ev.StoneAborted)]
    assert len(aborted) == 1 and "overload" in aborted[0].message
    assert rig.scale.recovers == 0
    assert rig.session.phase is Phase.AWAIT_REMOVAL


def test_fault_after_a_recorded_stone_says_it_is_already_recorded(rig):
    m = rig.settle(150_000)
    rig.session.recorded(7, m)
    rig.scale.pan = DeviceError("lost the connection", "check the cable")
    rig.step()
    assert rig.session.phase is Phase.FAULT
    rig.scale.pan = r(150_000)
    rig.step()  # recovers
    back = rig.events[-1]
    assert isinstance(back, ev.DeviceRecovered)
    assert "already recorded as #7" in back.message and "place it again" not in back.message
    # the operator removes it; the same stone placed again is a NEW stone by choice, not by our prompt
    rig.scale.pan = r(0)
    rig.step()
    assert rig.session.phase is Phase.IDLE


def test_fault_while_settling_aborts_and_says_not_recorded(rig):
    rig.scale.pan = r(150_000, stable=False)
    rig.step()
    rig.scale.pan = DeviceError("lost the connection", "check the cable")
    rig.step()
    assert "aborted; nothing was recorded" in rig.events[-1].message
    rig.scale.recover_result = DeviceError("port gone", "plug it in")
    rig.step()
    rig.step()
    still = [e for e in rig.events if isinstance(e, ev.DeviceFault) and "still unreachable" in e.message]
    assert len(still) == 1  # told once, not every poll
    rig.scale.recover_result = IDENT
    rig.scale.pan = r(150_000)
    rig.step()
    assert "NOT recorded: remove it, then place it again" in rig.events[-1].message
    assert rig.session.phase is Phase.AWAIT_REMOVAL


def test_recovery_with_empty_pan_goes_idle(rig):
    rig.scale.pan = DeviceError("lost", "cable")
    rig.step()
    rig.scale.pan = r(0)
    rig.step()
    assert rig.session.phase is Phase.IDLE and "Place the next stone" in rig.events[-1].message


# -- start-up with a stone on the pan ------------------------------------------------


def test_restart_with_a_recorded_stone_on_the_pan_never_weighs_it_again():
    rig = Rig(on_pan=41)
    rig.scale.pan = r(150_000)
    for _ in range(10):
        assert rig.step() is None
    assert rig.session.phase is Phase.AWAIT_REMOVAL
    start = rig.events[0]
    assert isinstance(start, ev.PanLoadedAtStart) and start.recorded_seq == 41
    assert "already recorded as #41" in start.message


def test_restart_with_an_unrecorded_stone_asks_to_place_it_again():
    rig = Rig()
    rig.scale.pan = r(150_000)
    assert rig.step() is None
    assert "was NOT recorded" in rig.events[0].message
    rig.scale.pan = r(0)
    rig.step()
    assert rig.settle(150_000) is not None


def test_restart_with_empty_pan_forgets_a_stale_marker():
    rig = Rig(on_pan=41)
    rig.step()
    assert rig.session.on_pan is None and rig.session.phase is Phase.IDLE


# -- further steps and ambient ---------------------------------------------------------


class FakeStep:
    def __init__(self, name: str, result: list[Reading] | Exception) -> None:
        self.name, self.result, self.seen = name, result, []

    def run(self, mass: Reading) -> list[Reading]:
        self.seen.append(mass.value_ug)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class FakeAmbient:
    name = "ambient"

    def __init__(self, status: AmbientStatus, required: bool = False) -> None:
        self.status, self.required = status, required

    def sample(self) -> AmbientStatus:
        return self.status


OK_AMBIENT = AmbientStatus("ok", "", 215, 453, "ambient", IDENT, "t", ("< 215 453",))


def test_steps_run_in_order_and_every_reading_lands_in_one_measurement():
    spec = Reading("spectro", "spectrometer", "fake", IDENT, "peak", "nm", "t", (), value=5752, scale=-1)
    a, b = FakeStep("spectro", [spec]), FakeStep("camera", [])
    rig = Rig(steps=[a, b], ambient=FakeAmbient(OK_AMBIENT)).ready()
    m = rig.settle(150_000)
    assert [x.quantity for x in m.readings] == ["mass", "peak"]
    assert a.seen == b.seen == [150_000]
    assert m.ambient == OK_AMBIENT


def test_a_failing_step_aborts_the_stone_and_names_the_instrument():
    step = FakeStep("spectrometer", DeviceError("no reply within 2 s", "check the cable"))
    rig = Rig(steps=[step]).ready()
    assert rig.settle(150_000) is None
    aborted = rig.events[-1]
    assert isinstance(aborted, ev.StoneAborted) and aborted.device == "spectrometer"
    assert "spectrometer: no reply" in aborted.message


def test_missing_ambient_is_a_warning_unless_required():
    missing = AmbientStatus("missing", "ambient sensor ambient: no reply", device="ambient")
    rig = Rig(ambient=FakeAmbient(missing)).ready()
    m = rig.settle(150_000)
    assert m is not None and m.ambient.status == "missing"
    assert any(isinstance(e, ev.AmbientWarning) for e in rig.events)
    rig2 = Rig(ambient=FakeAmbient(missing, required=True)).ready()
    assert rig2.settle(150_000) is None
    assert rig2.events[-1].device == "ambient"


def test_not_recorded_keeps_the_stone_marked_unrecorded(rig):
    m = rig.settle(150_000)
    rig.session.not_recorded("disk full")
    assert rig.session.on_pan is None and rig.session.phase is Phase.AWAIT_REMOVAL
    assert "NOT RECORDED: disk full" in rig.events[-1].message
    assert m.mass_ug == 150_000


# -- what mutation testing showed untested ----------------------------------------------


def test_start_with_the_pan_at_the_removal_threshold_counts_as_loaded():
    rig = Rig()
    rig.scale.pan = r(CFG.removal_threshold_ug)
    rig.step()
    assert rig.session.phase is Phase.AWAIT_REMOVAL
    rig2 = Rig()
    rig2.scale.pan = r(CFG.removal_threshold_ug - 1)
    rig2.step()
    assert rig2.session.phase is Phase.IDLE and isinstance(rig2.events[-1], ev.Ready)


def test_the_final_reading_is_compared_with_the_last_settled_one_not_the_first():
    cfg = CFG.model_copy(update={"stable_readings": 3})
    rig = Rig(cfg).ready()
    tol = cfg.stable_tolerance_ug
    rig.scale.pan = r(150_000)
    rig.step()  # detected
    rig.scale.script.extend([r(150_000), r(150_000 + tol), r(150_000 + 2 * tol)])  # each agrees with the one before
    rig.scale.finals.append(r(150_000 + 3 * tol))  # within tol of the last, 3 tol from the first
    assert rig.step() is None and rig.step() is None
    m = rig.step()
    assert m is not None and m.mass_ug == 150_000 + 3 * tol
    assert rig.session.phase is Phase.AWAIT_REMOVAL  # set before the caller seals it
    measured = [e for e in rig.events if isinstance(e, ev.StoneMeasured)]
    assert [e.mass_ug for e in measured] == [150_000 + 3 * tol]


def test_recorded_event_carries_the_stone_and_its_notes_and_flags(rig):
    spec = Reading("spectro", "spectrometer", "fake", IDENT, "spectrum-processed", "1", "t", (), value=1,
                   note="screening PASS")
    rig2 = Rig(steps=[FakeStep("spectro", [spec])]).ready()
    m = rig2.settle(100_000)
    rig2.session.recorded(12, m)
    e = rig2.events[-1]
    assert isinstance(e, ev.StoneRecorded)
    assert (e.seq, e.mass_ug, e.carat, e.carat_raw, e.flags) == (12, 100_000, "0.50", "0.500", ("reweigh:0.50ct",))
    assert "; screening PASS" in e.message and "reweigh:0.50ct: weigh again on a second balance" in e.message
    assert rig2.session.on_pan == 12 and rig2.session.phase is Phase.AWAIT_REMOVAL
    m = rig.settle(150_000)  # no steps, no flags: nothing appended
    rig.session.recorded(3, m)
    assert rig.events[-1].message == "Recorded #3: 0.75 ct (0.750 ct raw), 150000 µg. Remove the stone."


def test_a_note_on_the_mass_reading_itself_is_not_repeated():
    rig = Rig().ready()
    m = rig.settle(150_000)
    noted = Measurement((Reading(**{**m.readings[0].__dict__, "note": "scale note"}),), m.ambient, m.flags)
    rig.session.recorded(1, noted)
    assert "scale note" not in rig.events[-1].message


def test_a_required_ambient_sensor_that_answers_lets_the_stone_through():
    rig = Rig(ambient=FakeAmbient(OK_AMBIENT, required=True)).ready()
    m = rig.settle(150_000)
    assert m is not None and m.ambient.status == "ok"
    assert not any(isinstance(e, ev.AmbientWarning) for e in rig.events)


def test_ambient_back_to_ok_is_told_once():
    amb = FakeAmbient(AmbientStatus("missing", "no reply", device="ambient"))
    rig = Rig(ambient=amb).ready()
    m = rig.settle(150_000)
    rig.session.recorded(1, m)
    rig.scale.pan = r(0)
    rig.step()
    amb.status = OK_AMBIENT
    rig.settle(150_000)
    warnings = [e for e in rig.events if isinstance(e, ev.AmbientWarning)]
    assert [w.status for w in warnings] == ["missing", "ok"]


def test_a_scale_unreachable_at_start_begins_in_fault_and_recovers():
    rig = Rig()
    rig.session.scale_unreachable("no reply within 1 s")
    assert rig.session.phase is Phase.FAULT and rig.session.fault == "no reply within 1 s"
    rig.scale.recover_result = DeviceError("no reply within 1 s", "check the cable")
    rig.step()
    assert rig.events == []  # the same cause: not told again
    rig.scale.recover_result = IDENT
    rig.step()
    assert rig.session.phase is Phase.IDLE and rig.session.fault is None


def test_a_step_failure_keeps_the_instruments_fix():
    step = FakeStep("spectrometer", DeviceError("saturated", "close the lid"))
    rig = Rig(steps=[step]).ready()
    rig.settle(150_000)
    assert "Fix: close the lid" in rig.events[-1].message


def test_events_name_the_scale_and_the_cause():
    rig = Rig().ready()
    rig.scale.pan = DeviceRefusal("balance reports overload (S +)", "remove the load")
    rig.step()
    refused = rig.events[-1]
    assert isinstance(refused, ev.DeviceFault) and (refused.device, refused.reason) == (
        "scale", "balance reports overload (S +)")
    rig.scale.pan = DeviceError("lost the connection", "check the cable")
    rig.step()
    fault = rig.events[-1]
    assert (fault.device, fault.reason) == ("scale", "lost the connection")
    assert rig.session.fault == "lost the connection"
    rig.scale.recover_result = DeviceError("port gone", "plug it in")
    rig.step()
    still = rig.events[-1]
    assert (still.device, still.reason) == ("scale", "port gone")
    rig.scale.recover_result = IDENT
    rig.scale.pan = r(0)
    rig.step()
    back = rig.events[-1]
    assert isinstance(back, ev.DeviceRecovered) and (back.device, back.serial) == ("scale", "SN-1")


def test_a_refusal_before_the_first_reading_keeps_the_start_check():
    rig = Rig(on_pan=5)
    rig.scale.pan = DeviceRefusal("the balance is set to oz; set it to g or ct", "change the unit")
    rig.step()
    assert rig.session.phase is Phase.START
    rig.scale.pan = r(150_000)
    rig.step()  # the unit is fixed: the pan is checked as at start-up
    assert isinstance(rig.events[-1], ev.PanLoadedAtStart) and rig.events[-1].recorded_seq == 5


def test_a_refusal_is_told_again_after_a_good_reading():
    rig = Rig().ready()
    refusal = DeviceRefusal("balance reports overload (S +)", "remove the load")
    rig.scale.script.extend([refusal, refusal, r(0), refusal])
    for _ in range(4):
        rig.step()
    assert sum(isinstance(e, ev.DeviceFault) for e in rig.events) == 2


def test_recovery_with_the_pan_at_the_removal_threshold_counts_as_loaded(rig):
    rig.scale.pan = DeviceError("lost", "cable")
    rig.step()
    rig.scale.pan = r(CFG.removal_threshold_ug)
    rig.step()
    assert rig.session.phase is Phase.AWAIT_REMOVAL and rig.session.on_pan is None


def test_aborted_event_names_the_instrument_and_reason(rig):
    rig.scale.pan = r(150_000, stable=False)
    rig.step()
    rig.scale.pan = DeviceRefusal("balance reports overload (S +)", "remove the load")
    rig.step()
    aborted = rig.events[-1]
    assert isinstance(aborted, ev.StoneAborted) and aborted.device == "scale"
    assert aborted.reason == "scale: balance reports overload (S +). Fix: remove the load"


def test_not_recorded_carries_the_reason(rig):
    rig.settle(150_000)
    rig.session.not_recorded("disk full")
    assert rig.events[-1].reason == "disk full"
