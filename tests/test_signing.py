import hashlib
import json
import os
import stat

import cbor2
import pytest
from cwt import COSE, COSEKey

from station.records.cose import Signer, verify
from station.errors import KeyFileError, RecordError
from station.records.keys import init_key, kid_for, load_private_key, public_key_from_jwk
from station.instruments.reading import DeviceIdentity
from station.instruments.reading import mass_reading
from station.records.payload import RecordInput, build_payload


@pytest.fixture
def signer(tmp_path):
    return Signer(init_key(tmp_path / "keys" / "k.key"))


def _payload(seq=1, prev=bytes(32)):
    reading = mass_reading(
        device="balance", driver="mtsics", identity=DeviceIdentity("XS205", "B1", ('< I4 A "B1"',)),
        value_ug=99_800, stable=True, raw=("> S", "< S S      0.0998 g"), time="2026-11-28T13:00:00.000Z",
    )
    item = RecordInput(operator="op", lot="L1", readings=[reading], flags=["reweigh:0.50ct"])
    return build_payload(item, record_id="r-1", station_id="S1", seq=seq, prev=prev, simulated=True,
                         time="2026-11-28T13:00:01.000Z")


def test_key_file_is_private_and_never_overwritten(tmp_path):
    path = tmp_path / "keys" / "k.key"
    init_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="already exists"):
        init_key(path)


def test_group_readable_key_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "k.key"
    init_key(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyFileError) as exc:
        load_private_key(path)
    assert "0640" in str(exc.value) and f"chmod 600 {path}" in str(exc.value)


def test_missing_and_garbage_keys(tmp_path):
    with pytest.raises(KeyFileError, match="station keys init"):
        load_private_key(tmp_path / "none.key")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    os.chmod(bad, 0o600)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        load_private_key(bad)


def test_payload_is_deterministic_cbor():
    data = _payload()
    assert data == cbor2.dumps(cbor2.loads(data), canonical=True)
    decoded = cbor2.loads(data)
    assert decoded["readings"][0]["value"] == 99_800
    assert decoded["readings"][0]["carat"] == "0.50" and decoded["readings"][0]["carat_raw"] == "0.499"
    assert decoded["readings"][0]["raw"] == ["> S", "< S S      0.0998 g"]


def test_sign_and_verify_round_trip(signer):
    data = signer.sign(_payload())
    tag = cbor2.loads(data)
    assert tag.tag == 18
    assert cbor2.loads(tag.value[0]) == {1: -8, 4: signer.kid.encode()}
    v = verify(data, {signer.kid: signer.public_key})
    assert cbor2.loads(v.payload)["seq"] == 1


def test_independent_cose_library_verifies_our_record(signer):
    data = signer.sign(_payload())
    jwk = signer.jwk()
    payload = COSE.new().decode(data, COSEKey.from_jwk(jwk))
    assert cbor2.loads(payload)["station_id"] == "S1"


def test_kid_is_the_rfc7638_thumbprint(signer):
    jwk = signer.jwk()
    assert jwk["kid"] == kid_for(public_key_from_jwk(jwk))
    # Recompute as any consumer would, from the JWK's required members only.
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x")}, separators=(",", ":"), sort_keys=True)
    import base64

    assert jwk["kid"] == base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def test_every_flipped_bit_is_rejected(signer):
    data = signer.sign(_payload())
    keys = {signer.kid: signer.public_key}
    for i in range(0, len(data) * 8, 7):
        damaged = bytearray(data)
        damaged[i // 8] ^= 1 << (i % 8)
        with pytest.raises(RecordError):
            verify(bytes(damaged), keys)


def test_unknown_key_is_rejected(signer, tmp_path):
    other = Signer(init_key(tmp_path / "other.key"))
    with pytest.raises(RecordError, match="unknown key"):
        verify(signer.sign(_payload()), {other.kid: other.public_key})


from hypothesis import given, strategies as st  # noqa: E402

from station.records.cose import encode_sign1, loads_exactly, parse, sig_structure  # noqa: E402
from station.records.cose import dumps as canonical_dumps  # noqa: E402

# Lengths around every CBOR length-encoding boundary (23/24, 255/256, 65535/65536).
_sizes = st.sampled_from([0, 1, 23, 24, 25, 255, 256, 257, 65535, 65536, 65537])


@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=80))
def test_hand_built_encodings_match_cbor2(protected, payload, signature):
    assert sig_structure(protected, payload) == canonical_dumps(["Signature1", protected, b"", payload])
    assert encode_sign1(protected, payload, signature) == canonical_dumps(
        cbor2.CBORTag(18, [protected, {}, payload, signature]))


@given(_sizes, _sizes)
def test_hand_built_encodings_match_cbor2_at_length_boundaries(n, m):
    p, q = bytes(n), b"\x01" * m
    assert encode_sign1(p, q, b"s" * 64) == canonical_dumps(cbor2.CBORTag(18, [p, {}, q, b"s" * 64]))


@given(st.binary(max_size=64))
def test_parse_raises_only_record_errors_on_arbitrary_bytes(data):
    try:
        parse(data)
    except RecordError:
        pass


def test_a_non_empty_unprotected_header_is_refused(signer):
    tag = cbor2.loads(signer.sign(_payload()))
    for unprotected in ({4: b"x"}, {1: -8}, [], b""):
        tag.value[1] = unprotected
        with pytest.raises(RecordError, match="unprotected header is not empty"):
            verify(cbor2.dumps(tag), {signer.kid: signer.public_key})


def test_the_digest_is_of_the_signed_content_which_is_the_stations_bytes(signer):
    data = signer.sign(_payload())
    assert parse(data).digest == hashlib.sha256(data).digest()


def test_loads_exactly_refuses_trailing_bytes_and_lone_breaks():
    assert loads_exactly(b"\x01") == 1
    for bad in (b"\x01\x02", b"\xff"):
        with pytest.raises(ValueError):
            loads_exactly(bad)


@given(st.binary(max_size=300), st.binary(max_size=300), st.binary(max_size=80))
def test_the_fast_split_recovers_what_was_encoded(protected, payload, signature):
    from station.records.cose import split_canonical

    assert split_canonical(encode_sign1(protected, payload, signature)) == (protected, payload, signature)


@given(st.one_of(st.binary(max_size=120), st.binary(max_size=120).map(lambda b: b"\xd2\x84" + b)))
def test_the_fast_split_accepts_only_the_canonical_encoding(data):
    from station.records.cose import split_canonical

    parts = split_canonical(data)
    if parts is not None:
        assert encode_sign1(*parts) == data


def test_the_fast_split_refuses_long_form_lengths():
    from station.records.cose import split_canonical

    good = encode_sign1(b"p", b"x" * 30, b"s" * 64)
    assert split_canonical(good) is not None
    long_form = b"\xd2\x84" + b"\x58\x01p" + b"\xa0" + b"\x58\x1e" + b"x" * 30 + b"\x58\x40" + b"s" * 64
    assert split_canonical(long_form) is None  # protected's length in two bytes where one would do
    assert split_canonical(good + b"\x00") is None and split_canonical(good[:-1]) is None


_BOUNDARY_SIZES = [0, 23, 24, 255, 256, 65535, 65536]


@pytest.mark.parametrize("n", _BOUNDARY_SIZES)
def test_the_fast_split_at_every_length_boundary(n):
    from station.records.cose import split_canonical

    data = encode_sign1(b"p" * n, b"q" * n, b"s" * n)
    assert data == canonical_dumps(cbor2.CBORTag(18, [b"p" * n, {}, b"q" * n, b"s" * n]))
    assert split_canonical(data) == (b"p" * n, b"q" * n, b"s" * n)


@pytest.mark.parametrize("head, n", [
    (b"\x58", 23), (b"\x59", 255), (b"\x5a", 65535),  # a wider length than needed: not canonical
    (b"\x58", 24), (b"\x59", 256), (b"\x5a", 65536),  # the narrowest width for n: canonical
])  # fmt: skip
def test_the_fast_split_takes_only_the_shortest_length(head, n):
    from station.records.cose import split_canonical

    width = {b"\x58": 1, b"\x59": 2, b"\x5a": 4}[head]
    protected, payload = canonical_dumps({1: -8, 4: b"k"}), b"q" * n
    data = (b"\xd2\x84" + bytes((0x40 + len(protected),)) + protected + b"\xa0" + head + n.to_bytes(width, "big")
            + payload + b"\x58\x40" + b"s" * 64)
    shortest = n >= {1: 24, 2: 256, 4: 65536}[width]
    assert (split_canonical(data) is not None) == shortest
    # Either way it is the same signed content, so the same record.
    assert parse(data).digest == hashlib.sha256(encode_sign1(protected, payload, b"s" * 64)).digest()


def test_length_heads_past_four_gibibytes():
    from station.records.cose import _bstr_head

    assert _bstr_head(0xFFFFFFFF) == b"\x5a\xff\xff\xff\xff"
    assert _bstr_head(0x100000000) == b"\x5b" + (0x100000000).to_bytes(8, "big")


@pytest.mark.parametrize("header, problem", [
    ({1: -7, 4: b"k"}, "does not declare EdDSA"),
    ([1, -8], "does not declare EdDSA"),
    ({1: -8}, "has no kid"),
    ({1: -8, 4: "text kid"}, "has no kid"),
])  # fmt: skip
def test_protected_headers_that_are_refused(header, problem):
    data = encode_sign1(canonical_dumps(header), b"\xa0", b"s" * 64)
    with pytest.raises(RecordError, match=problem):
        parse(data)


@pytest.mark.parametrize("value", [[b"", {}, b""], b"not an array", [b"", {}, b"", b"", b""]])
def test_a_tag_18_that_is_not_a_four_element_array_is_refused(value):
    with pytest.raises(RecordError, match="not a 4-element array"):
        parse(cbor2.dumps(cbor2.CBORTag(18, value)))


def test_the_kid_cache_stays_small():
    from station.records import cose

    for i in range(300):
        parse(encode_sign1(canonical_dumps({1: -8, 4: f"kid-{i}".encode()}), b"\xa0", b"s" * 64))
    assert len(cose._kid_cache) == 256


@pytest.mark.parametrize("cut", range(1, 8))
def test_a_record_cut_short_anywhere_near_its_start_is_refused(signer, cut):
    from station.records.cose import _bstr_head, split_canonical

    data = signer.sign(_payload())
    protected = cbor2.loads(data).value[0]
    protected_end = 2 + len(_bstr_head(len(protected))) + len(protected)
    short = data[:protected_end] if cut == 1 else data[:cut]
    assert split_canonical(short) is None
    with pytest.raises(RecordError):
        parse(short)
