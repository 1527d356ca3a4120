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
