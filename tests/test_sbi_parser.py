"""The SBI print-line grammar: boundaries, exact µg, and properties on arbitrary bytes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.sbi_format import (
    UNIT_UG, ErrorLine, ForeignUnit, Reading, Special, format_line, format_special, parse_line,
    to_micrograms,
)
from drivers.sim.sbi import FOREIGN_UG, print_number
from drivers.sim.scale_physics import round_to


def test_the_reference_examples():
    assert parse_line(b"+   123.56 g  ") == Reading("", "+", "123.56", "g", "+   123.56 g  ")
    assert parse_line(b"N     +   123.56 g  ") == Reading("N", "+", "123.56", "g", "N     +   123.56 g  ")
    assert parse_line(b"+   123.56 g  ").micrograms("g") == 123_560_000


def test_blank_unit_is_the_stability_marker():
    dynamic = parse_line(b"-   123.56    ")
    assert isinstance(dynamic, Reading) and not dynamic.stable and dynamic.unit is None
    assert dynamic.micrograms("g") == -123_560_000
    assert parse_line(b"-   123.56 g  ").stable


@pytest.mark.parametrize("length", [13, 15, 19, 21, 0, 1])
def test_only_16_or_22_characters_are_print_lines(length):
    line = (b"+" + b" " * 40)[:length]
    with pytest.raises(ProtocolError, match=f"{length + 2} characters with CR LF"):
        parse_line(line)


@pytest.mark.parametrize(
    ("line", "ug"),
    [
        (b"+ 123456.7 mg ", 123_456_700),  # 8 wide: positions 3-10
        (b"+1234.5678 g  ", 1_234_567_800),  # 9 wide: position 2 used (older weigh cells)
        (b"         0 g  ", 0),  # blank sign, no decimal point
        (b"+       .5 g  ", 500_000),
        (b"-       5. g  ", -5_000_000),
        (b"+   0.0005 ct ", 100),
        (b"+     1000 ct ", 200_000_000),
    ],
)
def test_value_width_and_shapes(line, ug):
    reply = parse_line(line)
    assert isinstance(reply, Reading) and reply.micrograms(reply.unit) == ug


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (b"+12345.5678 g ", "position 11 must be a space"),  # 10 wide: runs into position 11
        (b"+   12 3.5 g  ", "no decimal number"),
        (b"+    1.2.3 g  ", "no decimal number"),
        (b"+          g  ", "no decimal number"),
        (b"+  -123.56 g  ", "no decimal number"),
        (b"x   123.56 g  ", "position 1 must be a sign"),
        (b"+   123.56 g\x7f ", "non-printable"),
        (b"+   123.56 g \xb5", "non-printable"),
        (b"+   123.56  g ", "no unit"),
        (b"+0.0000001 g  ", "finer than 1"),
    ],
)
def test_malformed_lines_say_why(line, why):
    with pytest.raises(ProtocolError, match=why):
        parse_line(line)


@pytest.mark.parametrize(
    ("line", "code", "shown", "ident"),
    [
        (b"      H       ", "H", "H", ""),
        (b"      HH      ", "H", "HH", ""),
        (b"      L       ", "L", "L", ""),
        (b"      LL      ", "L", "LL", ""),
        (b"      C       ", "C", "C", ""),
        (b"Stat     High       ", "H", "High", "Stat"),
        (b"Stat     Low        ", "L", "Low", "Stat"),
        (b"Stat     Cal.Ext.   ", "C", "Cal.Ext.", "Stat"),
    ],
)
def test_special_codes(line, code, shown, ident):
    assert parse_line(line) == Special(ident, code, shown, line.decode())


@pytest.mark.parametrize(
    ("line", "code"),
    [(b"   Err 02     ", "02"), (b"   Err 101    ", "101"), (b"Stat     ERR 101    ", "101"),
     (b"Stat     APP.ERR    ", "APP.ERR")],
)
def test_error_lines(line, code):
    assert parse_line(line) == ErrorLine(code, line.decode())


def test_err_with_four_digits_is_not_an_error_line():
    with pytest.raises(ProtocolError):
        parse_line(b"   Err 1234   ")


@pytest.mark.parametrize("unit", ["oz", "ozt", "lb", "GN", "dwt", "tlh", "/lb", "%", "pcs", "K"])
def test_units_we_do_not_convert_are_recognised_as_a_setting(unit):
    line = f"+   0.0035 {unit.ljust(3)}".encode()
    assert parse_line(line) == ForeignUnit("", unit, line.decode())


def test_to_micrograms_is_exact_and_refuses_what_is_not():
    assert to_micrograms("+0.0000001", "kg") == 100
    assert to_micrograms("-0.001", "mg") == -1
    assert to_micrograms("0.00001", "ct") == 2
    for value, unit in [("0.0001", "mg"), ("0.000001", "ct"), ("1", "oz"), ("1e3", "g"), ("", "g"), ("+", "g")]:
        with pytest.raises(ValueError):
            to_micrograms(value, unit)


def test_digit_step():
    assert parse_line(b"+   0.0000 g  ").digit_ug("g") == 100
    assert parse_line(b"+        0 g  ").digit_ug("g") == 1_000_000
    assert parse_line(b"+   0.0000 ct ").digit_ug("ct") == 20
    assert parse_line(b"+ 0.000000 mg ").digit_ug("mg") == 0  # finer than 1 µg


@given(st.binary(max_size=30))
def test_arbitrary_bytes_never_raise_anything_but_protocol_error(data):
    try:
        reply = parse_line(data)
    except ProtocolError:
        return
    assert isinstance(reply, (Reading, ForeignUnit, Special, ErrorLine))
    assert len(data) in (14, 20)


_PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=14, max_size=14)


@given(_PRINTABLE, st.sampled_from(["", "N", "G", "Stat"]))
def test_arbitrary_printable_lines_parse_or_say_why(body, ident):
    line = (ident.ljust(6) + body if ident else body).encode()
    try:
        reply = parse_line(line)
    except ProtocolError as e:
        assert e.what.startswith("unparseable SBI print line")
        return
    if isinstance(reply, Reading) and reply.unit:
        assert isinstance(reply.micrograms(reply.unit), int)


@given(
    st.integers(min_value=-220_000_000, max_value=220_000_000),
    st.sampled_from([1, 10, 100, 1000]),
    st.sampled_from(sorted(UNIT_UG)),
    st.booleans(),
    st.sampled_from([None, "N", "G"]),
)
def test_round_trip_from_the_simulators_formatter(value_ug, readability_ug, unit, stable, ident):
    sign, number = print_number(value_ug, readability_ug, unit)
    try:
        line = format_line(sign, number, unit if stable else None, ident)
    except ValueError:
        assert len(number) > 9  # only what the display cannot show is refused
        return
    assert line.endswith(b"\r\n") and len(line) == (16 if ident is None else 22)
    reply = parse_line(line[:-2])
    assert isinstance(reply, Reading) and reply.stable == stable and reply.ident == (ident or "")
    # Exactly the value rounded to the readability: nothing lost in the print line.
    assert reply.micrograms(unit) == round_to(value_ug, readability_ug)


@given(st.integers(min_value=-10**9, max_value=10**9), st.sampled_from(sorted(FOREIGN_UG)))
def test_foreign_unit_lines_from_the_simulator_are_one_refusable_shape(value_ug, unit):
    sign, number = print_number(value_ug, 100, unit)
    try:
        line = format_line(sign, number, unit)
    except ValueError:
        return
    assert parse_line(line[:-2]) == ForeignUnit("", unit, line[:-2].decode())


@pytest.mark.parametrize("text", ["H", "L", "C", "Err 02", "Err 101"])
@pytest.mark.parametrize("ident", [None, "Stat"])
def test_special_lines_from_the_simulator_round_trip(text, ident):
    line = format_special(text, ident)
    assert len(line) == (16 if ident is None else 22)
    reply = parse_line(line[:-2])
    assert isinstance(reply, ErrorLine if text.startswith("Err") else Special)
