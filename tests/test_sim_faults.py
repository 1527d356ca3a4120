"""drivers/sim/faults.py: the line simulators' fault switches, without a wire."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.mtsics import parse_line as mtsics_line
from drivers.sbi_format import parse_line as sbi_line
from drivers.sim.faults import LineFaults


@given(st.integers(min_value=0, max_value=2**32), st.booleans())
def test_garbage_is_4_to_16_bytes_that_never_end_a_line_or_parse(seed, seven_bit):
    data = LineFaults(seed=seed).garbage(seven_bit=seven_bit)
    assert 4 <= len(data) <= 16 and b"\r" not in data and b"\n" not in data
    assert all(b < 0x20 for b in data) if seven_bit else all(b >= 0x80 for b in data)
    for parse in (mtsics_line, sbi_line):
        with pytest.raises(ProtocolError):
            parse(data)


def test_same_seed_same_garbage():
    assert LineFaults(seed=5).garbage() == LineFaults(seed=5).garbage()


def test_a_one_shot_fault_fires_once_and_clear_drops_it():
    f = LineFaults(("garbage", "partial", "nak"), seed=1)
    assert f.take() is None
    f.inject("nak")
    assert f.take() == "nak" and f.take() is None
    f.inject("partial")
    f.clear()
    assert f.take() is None


def test_timeout_mutes_for_its_duration_and_zero_is_not_muted():
    f = LineFaults(seed=1)
    f.inject("timeout", 0)
    assert not f.muted  # 0 s: over at once (the mute is "now < until")
    f.inject("timeout", 60)
    assert f.muted
    f.clear()
    assert not f.muted


def test_bad_faults_are_refused_with_the_device_usage():
    f = LineFaults(seed=1)
    with pytest.raises(ValueError, match="needs a duration"):
        f.inject("timeout")
    with pytest.raises(ValueError, match="needs a duration"):
        f.inject("timeout", -0.001)
    with pytest.raises(ValueError, match="use garbage, partial or timeout$"):
        f.inject("nak")
    g = LineFaults(("garbage", "nak"), seed=1, usage="garbage, nak or timeout S")
    with pytest.raises(ValueError, match="use garbage, nak or timeout S$"):
        g.inject("sideways")
