from decimal import ROUND_DOWN, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.records.carat import (
    format_carats,
    format_raw_carats,
    millicarats,
    straddled_thresholds,
    trade_centicarats,
)


@pytest.mark.parametrize(
    "raw,trade",
    [("1.768", "1.76"), ("1.769", "1.77"), ("0.499", "0.50"), ("0.498", "0.49"), ("2.001", "2.00"), ("0.999", "1.00")],
)
def test_reference_examples(raw, trade):
    ug = int(Decimal(raw) * 200_000)
    assert format_raw_carats(ug) == raw
    assert format_carats(ug) == trade


def test_units_are_exact():
    assert millicarats(200) == 1 and millicarats(199) == 0
    assert trade_centicarats(200_000) == 100


def test_floats_are_refused():
    with pytest.raises(TypeError):
        millicarats(0.1)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=10**9))
def test_trade_rounding_matches_a_decimal_reference(ug):
    raw = (Decimal(ug) / 200_000).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
    truncated = raw.quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    expected = truncated + Decimal("0.01") if raw.as_tuple().digits[-1] == 9 and raw != truncated else truncated
    assert Decimal(format_carats(ug)) == expected


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=0, max_value=10**9))
def test_trade_rounding_is_monotonic(a, b):
    lo, hi = sorted((a, b))
    assert trade_centicarats(lo) <= trade_centicarats(hi)


def test_straddling_the_ban_thresholds():
    assert straddled_thresholds(99_800, 1_000) == [100_000]
    assert straddled_thresholds(199_800, 1_000) == [200_000]
    assert straddled_thresholds(150_000, 1_000) == []


# Negative masses (a zeroed balance with the stone removed reads below zero):
# millicarats truncates toward zero, like the balance's own display.
@pytest.mark.parametrize("ug, mct", [(-1, 0), (-199, 0), (-200, -1), (-201, -1), (-399, -1), (-400, -2)])
def test_millicarats_of_a_negative_mass_truncate_toward_zero(ug, mct):
    got = millicarats(ug)
    assert got == mct and type(got) is int
    assert millicarats(-ug) == -mct  # symmetric around zero


def test_negative_masses_have_no_trade_weight_but_show_their_raw_weight():
    with pytest.raises(ValueError, match="negative"):
        trade_centicarats(-200)
    with pytest.raises(ValueError):
        format_carats(-1_000)
    assert trade_centicarats(-199) == 0  # truncates to 0.000 ct: not negative
    assert format_raw_carats(-201) == "-0.001"


def test_straddling_at_the_exact_edges():
    # mass + uncertainty == threshold and mass - uncertainty == threshold both straddle (<=, not <).
    assert straddled_thresholds(99_000, 1_000) == [100_000]
    assert straddled_thresholds(101_000, 1_000) == [100_000]
    assert straddled_thresholds(98_999, 1_000) == []
    assert straddled_thresholds(101_001, 1_000) == []
    assert straddled_thresholds(100_000, 0) == [100_000]
    assert straddled_thresholds(150_000, 50_000) == [100_000, 200_000]


@pytest.mark.parametrize("mass, uncertainty", [(99_000.0, 1_000), (99_000, 1_000.0), (True, 1_000), (99_000, False)])
def test_straddling_refuses_floats_and_bools(mass, uncertainty):
    with pytest.raises(TypeError, match="integer micrograms"):
        straddled_thresholds(mass, uncertainty)
