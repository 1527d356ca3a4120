"""Spectrometer block layouts: exact boundaries, and properties over arbitrary bytes."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import spectro_frames as wire
from drivers.errors import ProtocolError

HEADER = wire.FrameHeader(pixels=4, scans=2, integration_us=100_000, flags=3)
COUNTS = np.array([1000, 1200, 65535, 1001], dtype=np.uint16)


def block(header=HEADER, counts=COUNTS) -> bytes:
    return wire.encode_binary(header, counts)[1:]  # without STX


def test_binary_block_layout_is_header_counts_end_marker_crc():
    b = block()
    assert len(b) == wire.block_size(4) == 12 + 8 + 4
    assert b[:12] == bytes.fromhex("ffff 0004 0002 000186a0 0003")
    assert b[12:20] == bytes.fromhex("03e8 04b0 ffff 03e9")
    assert b[20:22] == b"\xff\xfd"
    assert wire.block_size(2048) == 4112  # + STX = 4113 bytes for a 2048-pixel spectrum


def test_roundtrip_binary_and_ascii():
    for encode, parse in ((wire.encode_binary, wire.parse_binary), (wire.encode_ascii, wire.parse_ascii)):
        header, counts = parse(encode(HEADER, COUNTS)[1:], 4)
        assert header == HEADER and counts.tolist() == COUNTS.tolist() and counts.dtype == np.uint16


@pytest.mark.parametrize("cut", [1, 2, 11, 12, 13, 23])
def test_every_truncation_is_detected(cut):
    with pytest.raises(ProtocolError):
        wire.parse_binary(block()[:-cut], 4)


def test_one_extra_byte_is_detected():
    with pytest.raises(ProtocolError, match="25 bytes"):
        wire.parse_binary(block() + b"\x00", 4)


@pytest.mark.parametrize("i", range(24))
def test_every_single_bit_flip_is_detected(i):
    b = bytearray(block())
    b[i] ^= 0x10
    with pytest.raises(ProtocolError):
        wire.parse_binary(bytes(b), 4)


def test_pixel_count_boundaries():
    assert wire.parse_header(struct.pack(">HHHIH", 0xFFFF, wire.MAX_PIXELS, 1, 10, 0)).pixels == wire.MAX_PIXELS
    for bad in (0, wire.MAX_PIXELS + 1):
        with pytest.raises(ProtocolError, match="pixels"):
            wire.parse_header(struct.pack(">HHHIH", 0xFFFF, bad, 1, 10, 0))
    with pytest.raises(ProtocolError, match="the device reported 2048"):
        wire.parse_header(struct.pack(">HHHIH", 0xFFFF, 2047, 1, 10, 0), 2048)


def test_zero_scans_is_rejected():
    with pytest.raises(ProtocolError, match="0 scans"):
        wire.parse_header(struct.pack(">HHHIH", 0xFFFF, 4, 0, 10, 0))


def test_ascii_sum_mismatch_and_count_out_of_range():
    with pytest.raises(ProtocolError, match="sum"):
        wire.parse_ascii(b"S 2 1 10 0\r\n1\r\n2\r\nE 4\r\n", 2)
    with pytest.raises(ProtocolError, match="out of range"):
        wire.parse_ascii(b"S 2 1 10 0\r\n1\r\n65536\r\nE 1\r\n", 2)
    assert wire.parse_ascii(b"S 2 1 10 0\r\n65535\r\n1\r\nE 0\r\n", 2)[1].tolist() == [65535, 1]


def test_numbers_in_query_replies():
    assert wire.parse_float(b"-1.2e-05", "c2") == -1.2e-05
    for bad in (b"nan", b"inf", b"-Infinity", b"1,5", b""):
        with pytest.raises(ProtocolError):
            wire.parse_float(bad, "c0")
    assert wire.parse_uint(b"65535", "n", 65535) == 65535
    with pytest.raises(ProtocolError):
        wire.parse_uint(b"65536", "n", 65535)


# -- properties ------------------------------------------------------------------

PARSERS = [
    lambda b: wire.parse_binary(b),
    lambda b: wire.parse_binary(b, 2048),
    lambda b: wire.parse_header(b),
    lambda b: wire.parse_ascii(b),
    lambda b: wire.parse_ascii_header(b, 4),
    lambda b: wire.parse_text(b, "x"),
    lambda b: wire.parse_float(b, "x"),
    lambda b: wire.parse_uint(b, "x"),
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), which=st.integers(0, len(PARSERS) - 1))
def test_arbitrary_bytes_raise_only_protocol_errors(data, which):
    try:
        PARSERS[which](data)
    except ProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(tail=st.binary(max_size=40), n=st.integers(1, 6))
def test_valid_header_with_arbitrary_body_is_decoded_or_refused(tail, n):
    head = struct.pack(">HHHIH", 0xFFFF, n, 1, 10, 0)
    try:
        header, counts = wire.parse_binary(head + tail)
    except ProtocolError:
        return
    # Accepted only if it is exactly a well-formed block.
    assert len(tail) == 2 * n + 4 and counts.size == header.pixels == n
    assert wire.encode_binary(header, counts)[1:] == head + tail


@settings(max_examples=100, deadline=None)
@given(counts=st.lists(st.integers(0, 65535), min_size=1, max_size=64),
       scans=st.integers(1, 65535), us=st.integers(0, 2**32 - 1), flags=st.integers(0, 65535))
def test_encode_parse_roundtrip(counts, scans, us, flags):
    header = wire.FrameHeader(len(counts), scans, us, flags)
    arr = np.array(counts, dtype=np.uint16)
    for encode, parse in ((wire.encode_binary, wire.parse_binary), (wire.encode_ascii, wire.parse_ascii)):
        got_header, got = parse(encode(header, arr)[1:], len(counts))
        assert got_header == header and got.tolist() == counts
