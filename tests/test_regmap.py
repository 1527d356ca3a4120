"""Register maps and decoding: exact µg, every documented error type, round trips."""

import re
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import ProtocolError
from drivers.regdecode import decode_ambient, decode_scale, encode_ambient, encode_scale, float32_to_ug
from drivers.regmap import MAP_DIR, AmbientRegisterMap, ScaleRegisterMap, load_map

SCALE_MAPS = ["laumas", "flintec", "generic-float32"]
word = st.integers(0, 0xFFFF)


def make(**kw) -> ScaleRegisterMap:
    base = {"name": "t", "unit": "g", "weight": {"register": 40001, "type": "int32"}, "decimals": 4}
    base.update(kw)
    return ScaleRegisterMap.model_validate(base)


def test_every_map_file_loads():
    files = sorted(MAP_DIR.glob("*.toml"))
    assert {p.stem for p in files} >= {"laumas", "flintec", "generic-float32", "ambient-sht20"}
    for path in files:
        kind = "ambient" if path.stem.startswith("ambient") else "scale"
        m = load_map(str(path), kind)
        assert isinstance(m, AmbientRegisterMap if kind == "ambient" else ScaleRegisterMap)


def test_laumas_registers_are_one_based():
    m = load_map("laumas")
    assert (m.command.address, m.status.address, m.weight.address) == (5, 6, 9)
    assert m.reads() == [("holding", 6, 5)]  # 40007..40011 in one request


def test_laumas_net_weight_sign_from_status_bit_8():
    m = load_map("laumas")
    regs = {("holding", 6 + i): 0 for i in range(5)}
    regs[("holding", 9)], regs[("holding", 10)] = 0x0001, 0x86A0  # 100000 counts
    regs[("holding", 6)] = 1 << 11
    r = decode_scale(m, regs)
    assert (r.value_ug, r.stable) == (10_000_000, True)  # 10.0000 g
    regs[("holding", 6)] = (1 << 11) | (1 << 8)
    assert decode_scale(m, regs).value_ug == -10_000_000
    regs[("holding", 6)] = 1 << 7  # gross negative says nothing about net
    r = decode_scale(m, regs)
    assert (r.value_ug, r.stable) == (10_000_000, False)
    regs[("holding", 6)] = (1 << 3) | 1
    r = decode_scale(m, regs)
    assert r.overload and r.error and not r.underload


def test_flintec_decimal_point_from_status_bits_27_to_31():
    m = load_map("flintec")
    regs = {("holding", i): 0 for i in range(8)}
    regs[("holding", 0)], regs[("holding", 1)] = 0xFFFF, 0xFC18  # -1000 counts
    for dp, ug in ((0, -1_000_000_000), (3, -1_000_000), (6, -1_000), (9, -1)):
        regs[("holding", 6)] = dp << 11  # bit 27 of the high-word-first status
        assert decode_scale(m, regs).value_ug == ug
    regs[("holding", 6)] = 10 << 11
    with pytest.raises(ProtocolError, match="10 decimals"):
        decode_scale(m, regs)
    regs[("holding", 6)] = 4 << 11
    regs[("holding", 7)] = 1 << 2  # B2 lives in the low word
    assert decode_scale(m, regs).stable is False


def test_finer_than_a_microgram_is_an_error_not_a_rounding():
    m = make(unit="mg", decimals=4)
    with pytest.raises(ProtocolError, match="finer than 1 µg"):
        decode_scale(m, {("holding", 0): 0, ("holding", 1): 1})
    assert decode_scale(m, {("holding", 0): 0, ("holding", 1): 10}).value_ug == 1
    m3 = make(unit="mg", decimals=3)
    assert decode_scale(m3, {("holding", 0): 0, ("holding", 1): 1}).value_ug == 1


def test_factor_and_decimal_point_register():
    m = make(decimals=None, factor=Decimal("0.002"), unit="ct")  # 0.002 ct per count
    assert decode_scale(m, {("holding", 0): 0, ("holding", 1): 250}).value_ug == 100_000  # 0.5 ct
    d = make(decimals=None, weight={"register": 40001, "type": "int16"},
             decimal_point_register={"register": 40005})
    assert decode_scale(d, {("holding", 0): 0xFFFF, ("holding", 4): 2}).value_ug == -10_000
    assert d.reads() == [("holding", 0, 5)]


def test_word_order_little():
    m = make(weight={"register": 40001, "type": "uint32", "word_order": "little"}, decimals=0)
    assert decode_scale(m, {("holding", 0): 0x0002, ("holding", 1): 0x0001}).value_ug == 0x00010002 * 10**6


@pytest.mark.parametrize(("value", "ug"), [
    (0.0998, 99_800),
    (1.0000005, 1_000_000),  # the float is just below .5 µg above 1 g: half-even has no tie here
    (-0.0001, -100),
])
def test_float32_rule(value, ug):
    f = struct.unpack(">f", struct.pack(">f", value))[0]
    assert float32_to_ug(f, "g", 100) == round(ug, -2)


def test_float32_ties_go_to_even():
    assert float32_to_ug(0.5, "mg") == 500  # exact
    assert float32_to_ug(0.0025, "g", 1) == 2500  # 0.0025 is not exact as a float: exact value decides
    assert float32_to_ug(2.5, "ct", 1_000_000) == 0  # 500000 µg -> half-even to 0 of 1 g steps
    assert float32_to_ug(7.5, "ct", 1_000_000) == 2_000_000  # 1.5 g -> 2 g
    with pytest.raises(ProtocolError, match="not a number"):
        float32_to_ug(float("nan"), "g")
    with pytest.raises(ProtocolError):
        float32_to_ug(float("inf"), "g")


@pytest.mark.parametrize("bad", [
    {"weight": {"register": 40001, "type": "int32"}, "decimals": 4, "factor": Decimal(1)},
    {"weight": {"register": 40001, "type": "int32"}},
    {"weight": {"register": 40001, "type": "float32"}, "decimals": 2},
    {"weight": {"register": 40000, "type": "int32"}, "decimals": 2},
    {"weight": {"register": 50001, "type": "int32"}, "decimals": 2},
    {"weight": {"register": 40001, "type": "int32"}, "decimals": 2, "colour": "red"},
    {"weight": {"register": 40001, "type": "int32"}, "decimals": 2,
     "status": {"register": 40003, "stable": 1, "unstable": 2}},
    {"weight": {"register": 40001, "type": "int32"}, "decimals": 2, "status": {"register": 40003, "stable": 16}},
    {"weight": {"register": 40001, "type": "int32"}, "factor": Decimal(0)},
    {"weight": {"register": 40001, "type": "int32"}, "decimals": 2.0},
])
def test_bad_maps_are_refused(bad):
    with pytest.raises(ValueError):
        ScaleRegisterMap.model_validate({"name": "x", "unit": "g", **bad})


def test_register_notation_boundaries():
    ok = [(40001, "holding", 0), (49999, "holding", 9998), (30001, "input", 0), (39999, "input", 9998),
          (400001, "holding", 0), (465536, "holding", 65535), (300001, "input", 0)]
    for n, table, addr in ok:
        m = make(weight={"register": n, "type": "int16"}, decimals=0)
        assert (m.weight.table, m.weight.address) == (table, addr)
    for n in (40000, 30000, 465537, 365537, 1, 50000):
        with pytest.raises(ValueError):
            make(weight={"register": n, "type": "int16"}, decimals=0)


def test_reads_split_only_past_125_registers():
    m = make(decimals=None, decimal_point_register={"register": 40125})  # addresses 0..124: one read
    assert m.reads() == [("holding", 0, 125)]
    m = make(decimals=None, decimal_point_register={"register": 40126})
    assert m.reads() == [("holding", 0, 2), ("holding", 125, 1)]


def test_missing_register_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not read"):
        decode_scale(make(), {("holding", 0): 1})


# -- property tests ------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(SCALE_MAPS), words=st.lists(word, min_size=130, max_size=130))
def test_arbitrary_registers_decode_or_raise_protocol_error(name, words):
    m = load_map(name)
    regs = {(t, a + i): words[(a + i) % 130] for t, a, n in m.reads() for i in range(n)}
    try:
        r = decode_scale(m, regs)
    except ProtocolError:
        return
    assert isinstance(r.value_ug, int) and not isinstance(r.value_ug, bool)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(SCALE_MAPS), value=st.integers(-200_000_000, 200_000_000),
       stable=st.booleans(), over=st.booleans())
def test_round_trip_on_the_readability_grid(name, value, stable, over):
    m = load_map(name)
    value = value // 100 * 100  # the transmitters' grid: 0.1 mg
    r = decode_scale(m, encode_scale(m, value, stable=stable, overload=over))
    assert r.value_ug == value and r.stable == stable
    if m.status.overload is not None:
        assert r.overload == over


@settings(max_examples=200, deadline=None)
@given(t=word, h=word)
def test_ambient_arbitrary_registers(t, h):
    m = load_map("ambient-sht20", "ambient")
    try:
        v = decode_ambient(m, {("input", 1): t, ("input", 2): h})
    except ProtocolError:
        assert not (-400 <= (t - 65536 if t >= 32768 else t) <= 1250 and h <= 1000)
        return
    assert v.temperature_dc == (t - 65536 if t >= 32768 else t) and v.humidity_dpct == h


@given(t=st.integers(-400, 1250), h=st.integers(0, 1000))
def test_ambient_round_trip(t, h):
    m = load_map("ambient-sht20", "ambient")
    v = decode_ambient(m, encode_ambient(m, t, h))
    assert (v.temperature_dc, v.humidity_dpct) == (t, h)


def test_ambient_boundaries_and_hundredths():
    m = load_map("ambient-sht20", "ambient")
    assert decode_ambient(m, {("input", 1): 1250, ("input", 2): 1000}).humidity_dpct == 1000
    with pytest.raises(ProtocolError, match="100.1 %RH"):
        decode_ambient(m, {("input", 1): 0, ("input", 2): 1001})
    with pytest.raises(ProtocolError, match="125.1"):
        decode_ambient(m, {("input", 1): 1251, ("input", 2): 0})
    assert decode_ambient(m, {("input", 1): (-400) & 0xFFFF, ("input", 2): 0}).temperature_dc == -400
    with pytest.raises(ProtocolError):
        decode_ambient(m, {("input", 1): (-401) & 0xFFFF, ("input", 2): 0})
    fine = AmbientRegisterMap.model_validate({
        "name": "x", "temperature": {"register": 30001, "decimals": 2},
        "humidity": {"register": 30002, "type": "uint16", "decimals": 2}})
    # hundredths round half-even to tenths
    v = decode_ambient(fine, {("input", 0): 2125, ("input", 1): 4535})
    assert (v.temperature_dc, v.humidity_dpct) == (212, 454)


def test_unknown_map_names_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="laumas"):
        load_map("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nunit = "oz"\n[weight]\nregister = 40001\ntype = "int16"\n')
    with pytest.raises(ValueError, match="bad.toml"):
        load_map(str(bad))
    assert Path(MAP_DIR).is_dir()


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(SCALE_MAPS), words=st.lists(word, min_size=130, max_size=130))
def test_flat_decoding_is_the_same_decoding(name, words):
    from drivers.regdecode import ScaleDecoder

    m = load_map(name)
    dec = ScaleDecoder(m)
    flat = words[: sum(n for _, _, n in dec.reads)]
    keyed = dict(zip([(t, a + i) for t, a, n in dec.reads for i in range(n)], flat))
    try:
        want = dec.decode(keyed)
    except ProtocolError as e:
        with pytest.raises(ProtocolError, match=re.escape(e.what)):
            dec.decode_flat(flat)
        return
    assert dec.decode_flat(flat) == want


def test_decimal_point_bits_ignore_the_bits_around_them():
    m = make(weight={"register": 40001, "type": "int16"}, decimals=None,
             status={"register": 40002, "decimal_point": [8, 10], "stable": 11, "negative": 7})
    st = (1 << 11) | (3 << 8) | 0xFF & ~(1 << 7)  # stable, 3 decimals, low bits noise
    r = decode_scale(m, {("holding", 0): 1234, ("holding", 1): st})
    assert (r.value_ug, r.stable) == (1_234_000, True)
    st |= 1 << 12 | 1 << 15  # bits above the field
    assert decode_scale(m, {("holding", 0): 1234, ("holding", 1): st}).value_ug == 1_234_000


@pytest.mark.parametrize("bad", [0x10000, -1, 1.5, "1", None])
def test_register_values_must_be_16_bit_integers(bad):
    with pytest.raises(ProtocolError):
        decode_scale(make(), {("holding", 0): 0, ("holding", 1): bad})
