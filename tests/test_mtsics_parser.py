"""MT-SICS reply grammar: exact cases, and properties over arbitrary bytes."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.mtsics import (
    ForeignUnitReply,
    ErrorReply,
    InfoReply,
    StatusReply,
    WeightReply,
    parse_line,
    to_micrograms,
)
from drivers.sim.mtsics import format_value, weight_line

WEIGHTS = [
    (b"S S     0.0998 g", "S", True, 99_800, "g"),
    (b"S S      0.0998 g", "S", True, 99_800, "g"),
    (b"S S     100.00 g", "S", True, 100_000_000, "g"),
    (b"S D     129.07 g", "S", False, 129_070_000, "g"),
    (b"S S    -0.0998 g", "S", True, -99_800, "g"),
    (b"S D   -12.3456 g", "S", False, -12_345_600, "g"),
    (b"S S     -12.5 mg", "S", True, -12_500, "mg"),
    (b"S S      0.001 mg", "S", True, 1, "mg"),
    (b"S S     1.2345 ct", "S", True, 246_900, "ct"),
    (b"S S   0.000005 ct", "S", True, 1, "ct"),
    (b"S S   0.001000 kg", "S", True, 1_000_000, "kg"),
    (b"S S  220.009000 g", "S", True, 220_009_000, "g"),
    (b"S S 0.0998 g", "S", True, 99_800, "g"),  # spacing is not load-bearing
    (b"  S  S   0.0998   g  ", "S", True, 99_800, "g"),
    (b"S S    +0.0998 g", "S", True, 99_800, "g"),
    (b"S S          0 g", "S", True, 0, "g"),
    (b"S S    -0.0000 g", "S", True, 0, "g"),
    (b"TA A     100.00 g", "TA", True, 100_000_000, "g"),
]


@pytest.mark.parametrize(("raw", "cmd", "stable", "ug", "unit"), WEIGHTS)
def test_weight_replies(raw, cmd, stable, ug, unit):
    reply = parse_line(raw)
    assert reply == WeightReply(cmd, stable, ug, unit, raw.decode().strip())
    assert type(reply.value_ug) is int


@pytest.mark.parametrize(
    ("raw", "cmd", "status"),
    [
        (b"S I", "S", "I"),
        (b"S +", "S", "+"),
        (b"S -", "S", "-"),
        (b"Z A", "Z", "A"),
        (b"Z I", "Z", "I"),
        (b"Z +", "Z", "+"),
        (b"Z -", "Z", "-"),
        (b"ZI S", "ZI", "S"),
        (b"ZI D", "ZI", "D"),
        (b"TAC A", "TAC", "A"),
        (b"I2 L", "I2", "L"),
        (b"S  I ", "S", "I"),
    ],
)
def test_status_replies(raw, cmd, status):
    assert parse_line(raw) == StatusReply(cmd, status, raw.decode().strip())


@pytest.mark.parametrize(
    ("raw", "cmd", "text"),
    [
        (b'I2 A "XS205DU Excellence 220.0090 g"', "I2", "XS205DU Excellence 220.0090 g"),
        (b'I4 A "B525073136"', "I4", "B525073136"),
        (b'I4 A ""', "I4", ""),
        (b'I0 B 0 "I0"', "I0", '0 "I0"'),
    ],
)
def test_info_replies(raw, cmd, text):
    assert parse_line(raw) == InfoReply(cmd, text, raw.decode())


@pytest.mark.parametrize("code", ["ES", "ET", "EL"])
def test_error_replies(code):
    assert parse_line(code.encode()) == ErrorReply(code, code)
    assert parse_line(f" {code} ".encode()) == ErrorReply(code, code)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"   ", "not '<command>"),
        (b"\xff\xfe\x00garbage", "non-ASCII"),
        (b"S S     0.0998 \xb5g", "non-ASCII"),
        (b"S S     0.0998 g\r", "non-printable"),
        (b"S S\t0.0998 g", "non-printable"),
        (b"XYZ A", "unknown command word 'XYZ'"),
        (b"s s 0.0998 g", "not '<command>"),
        (b"S Q", "not '<command>"),
        (b"E", "not '<command>"),
        (b"ESX", "not '<command>"),
        (b"S", "not '<command>"),
        (b"S S", "without a value"),
        (b"S D", "without a value"),
        (b"S S     0.0998", "without a unit"),
        (b"S S     abc g", "not a decimal"),
        (b"S S     1e3 g", "not a decimal"),
        (b"S S     1.2.3 g", "not a decimal"),
        (b"S S     0.0998 g1", "unsupported unit"),
        (b"S S     0.0998 1g", "unsupported unit"),
        (b"S S  0.0000001 g", "finer than 1"),
        (b"S S     0.0001 mg", "finer than 1"),
        (b"S S 1234567890123456789012 g", "not a decimal"),
        (b"S I 5", "takes no value"),
        (b"S + 230.0 g", "takes no value"),
        (b"I2 A unquoted", "without a unit"),
        (b'I4 A "B525073136', "without a unit"),
    ],
)
def test_garbage_is_a_protocol_error_naming_the_bytes(raw, why):
    with pytest.raises(ProtocolError) as info:
        parse_line(raw)
    err = info.value
    assert why in err.what
    assert repr(raw) in err.what
    assert "resynchronises with @" in err.fix and "baud rate" in err.fix


def test_conversion_is_exact_decimal_not_float():
    # 0.1 + 0.2 style float error would show up in the last µg.
    assert to_micrograms("0.300000", "g") == 300_000
    assert to_micrograms("199.999999", "g") == 199_999_999
    assert to_micrograms("0.005", "ct") == 1_000
    assert to_micrograms("-0.000001", "g") == -1


# -- properties ---------------------------------------------------------------

GRAMMAR_CHARS = 'SDAEILTZ0123456789 .+-"gmkct'


@settings(max_examples=1500)
@given(st.one_of(st.binary(max_size=80), st.text(GRAMMAR_CHARS, max_size=30).map(str.encode)))
def test_any_bytes_give_a_reply_or_protocol_error(data):
    try:
        reply = parse_line(data)
    except ProtocolError as e:
        assert repr(data) in e.what
    else:
        assert isinstance(reply, (WeightReply, StatusReply, InfoReply, ErrorReply))
        assert reply.raw == data.decode("ascii").strip(" ")


@settings(max_examples=500)
@given(st.integers(min_value=-220_000_000, max_value=220_000_000))
def test_round_trip_at_1_ug_readability(ug):
    line = weight_line("S", True, ug, readability_ug=1)
    assert parse_line(line.encode()).value_ug == ug


@settings(max_examples=500)
@given(
    st.integers(min_value=-2_200_000, max_value=2_200_000),
    st.sampled_from([10, 100, 1000]),
    st.booleans(),
)
def test_round_trip_at_balance_readability(steps, readability, stable):
    ug = steps * readability
    reply = parse_line(weight_line("S", stable, ug, readability).encode())
    assert (reply.value_ug, reply.stable, reply.unit) == (ug, stable, "g")


def test_sim_format_is_right_aligned_in_10_chars():
    assert format_value(99_800) == "    0.0998"
    assert weight_line("S", True, 99_800) == "S S     0.0998 g"
    assert weight_line("S", False, -12_345_600) == "S D   -12.3456 g"
    assert format_value(0) == "    0.0000"


@pytest.mark.parametrize("unit", ["oz", "ozt", "dwt", "GN", "lb", "tl", "mom"])
def test_a_foreign_unit_is_a_setting_not_noise(unit):
    """oz/dwt/GN are units the balance can be set to: one clear refusal, not a resync flood."""
    reply = parse_line(f"S S     0.0998 {unit}".encode())
    assert reply == ForeignUnitReply("S", unit, f"S S     0.0998 {unit}")


# -- the edges of the grammar (each one a mutant that survived `make mutation`) --


def test_printable_ascii_edges():
    # 0x20 (space) and 0x7E (~) are printable and pass; 0x1F and DEL (0x7F) are not.
    assert parse_line(b'I2 A "a~b"') == InfoReply("I2", "a~b", 'I2 A "a~b"')
    assert parse_line(b'I2 A " "').text == " "
    for bad in (b'I2 A "a\x7fb"', b'I2 A "a\x1fb"', b'I2 A "a\x80b"'):
        with pytest.raises(ProtocolError, match="non-printable"):
            parse_line(bad)


def test_value_length_limit_is_twenty_characters():
    twenty = "0000000000000.100000"
    assert len(twenty) == 20
    assert to_micrograms(twenty, "g") == 100_000
    assert to_micrograms("-" + twenty[1:], "g") == -100_000
    with pytest.raises(ValueError):
        to_micrograms("0" + twenty, "g")  # 21 characters
    assert parse_line(f"S S {twenty} g".encode()).value_ug == 100_000
    with pytest.raises(ProtocolError):
        parse_line(f"S S 0{twenty} g".encode())


def test_junk_around_a_value_or_unit_is_not_trimmed_away():
    for raw in (b"S S X100.00 g", b"S S 100.00X g", b'S S "100.00"', b'S D "x"'):
        with pytest.raises(ProtocolError):
            parse_line(raw)
    # Letters after the unit make another unit (a setting), not grams.
    assert parse_line(b"S S 100.00 gX") == ForeignUnitReply("S", "gX", "S S 100.00 gX")


def test_a_quoted_text_is_info_only_after_a_or_b():
    assert parse_line(b'I4 A "B525073136"') == InfoReply("I4", "B525073136", 'I4 A "B525073136"')
    assert parse_line(b'I0 B 0 "I0"') == InfoReply("I0", '0 "I0"', 'I0 B 0 "I0"')
    with pytest.raises(ProtocolError):
        parse_line(b'I4 S "B525073136"')
