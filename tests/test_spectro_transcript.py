"""Exact bytes on the wire between SerialSpectrometer and a scripted pty peer.

A 4-pixel instrument keeps the blocks short enough to write out by hand; the
CRC bytes are CRC-16/XMODEM of the block, pinned here so a change of checksum
is a visible protocol change.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import spectro_frames as wire
from drivers.errors import DeviceRefused, DriverError, LinkError, ProtocolError, ReplyTimeout
from drivers.serial_link import SerialLink
from drivers.spectro_serial import SerialSpectrometer

try:
    from tests.protocol import ExpectedProtocol
except ImportError:  # tests/ is not a package; pytest puts it on sys.path
    from protocol import ExpectedProtocol

ACK, NAK, STX = b"\x06", b"\x15", b"\x02"
TIMEOUT = 0.3
IDENTIFY = [
    (b"bB\r\n", ACK),
    (b"?x16\r\n", ACK + b"SIM-CCD4\r\n"),
    (b"?x0\r\n", ACK + b"SPX0000042\r\n"),
    (b"?x17\r\n", ACK + b"4\r\n"),
    (b"?x18\r\n", ACK + b"65535\r\n"),
    (b"?I\r\n", ACK + b"100000\r\n"),
    (b"?A\r\n", ACK + b"2\r\n"),
]
# pixels 4, scans 2, 100000 us, flags 0x0003 (saturated, lamp), counts 1000 1200 65535 1001
BLOCK = bytes.fromhex("ffff00040002000186a0000303e804b0ffff03e9fffd" "5027")


def make(peer, **kw) -> SerialSpectrometer:
    return SerialSpectrometer(SerialLink(peer.port, baudrate=115200, timeout=TIMEOUT),
                              reply_timeout=TIMEOUT, **kw)


def test_identify_sets_binary_mode_then_reads_the_configuration_slots():
    with ExpectedProtocol(IDENTIFY) as peer:
        spec = make(peer)
        ident = spec.identify()
        spec.close()
    assert (ident.model, ident.serial) == ("SIM-CCD4", "SPX0000042")
    assert ident.raw == ("> ?x16", "< SIM-CCD4", "> ?x0", "< SPX0000042", "> ?x17", "< 4", "> ?x18", "< 65535")
    assert (spec.pixel_count, spec.max_counts, spec.integration_us, spec.scans) == (4, 65535, 100000, 2)


def test_binary_acquisition_decodes_counts_and_flags():
    with ExpectedProtocol(IDENTIFY + [(b"S\r\n", STX + BLOCK)]) as peer:
        spec = make(peer)
        spec.identify()
        frame = spec.acquire_frame()
        spec.close()
    assert frame.counts.dtype == np.uint16
    assert frame.counts.tolist() == [1000, 1200, 65535, 1001]
    assert frame.saturated and frame.header.lamp_on
    assert (frame.header.scans, frame.header.integration_us) == (2, 100000)
    assert frame.raw[1] == "< STX pixels=4 scans=2 integration_us=100000 flags=0x0003"


def test_ascii_acquisition_reads_lines_and_checks_the_sum():
    lines = b"S 4 2 100000 3\r\n1000\r\n1200\r\n65535\r\n1001\r\nE 3200\r\n"  # 68736 mod 65536
    steps = [(b"aA\r\n", ACK)] + IDENTIFY[1:] + [(b"S\r\n", STX + lines)]
    with ExpectedProtocol(steps) as peer:
        spec = make(peer, ascii_transfer=True)
        spec.identify()
        counts = spec.acquire()
        spec.close()
    assert counts.tolist() == [1000, 1200, 65535, 1001]


def test_settings_are_ascii_decimal_lines_answered_by_ack():
    steps = IDENTIFY + [(b"I250000\r\n", ACK), (b"A16\r\n", ACK), (b"J1\r\n", ACK), (b"J0\r\n", ACK)]
    with ExpectedProtocol(steps) as peer:
        spec = make(peer)
        spec.identify()
        spec.set_integration_us(250_000)
        spec.set_scans(16)
        spec.set_lamp(True)
        spec.set_lamp(False)
        spec.close()
    assert (spec.integration_us, spec.scans) == (250_000, 16)


def test_wavelength_coefficients_are_read_from_slots_1_to_4():
    steps = IDENTIFY + [(b"?x1\r\n", ACK + b"380.5\r\n"), (b"?x2\r\n", ACK + b"0.3201\r\n"),
                        (b"?x3\r\n", ACK + b"-1.2e-05\r\n"), (b"?x4\r\n", ACK + b"1e-10\r\n")]
    with ExpectedProtocol(steps) as peer:
        spec = make(peer)
        spec.identify()
        assert spec.wavelength_coefficients() == (380.5, 0.3201, -1.2e-05, 1e-10)
        spec.close()


def test_nak_is_a_refusal_with_the_valid_range():
    with ExpectedProtocol(IDENTIFY + [(b"I5\r\n", NAK)]) as peer:
        spec = make(peer)
        spec.identify()
        with pytest.raises(DeviceRefused) as err:
            spec.set_integration_us(5)
        spec.close()
    assert "65,000,000" in err.value.fix
    assert err.value.transcript[-2:] == ["> I5", "< b'\\x15'"]


def test_a_refused_setting_is_not_resent_after_reconnect():
    steps = IDENTIFY + [(b"A0\r\n", NAK)] + IDENTIFY
    with ExpectedProtocol(steps) as peer:
        spec = make(peer)
        spec.identify()
        with pytest.raises(DeviceRefused):
            spec.set_scans(0)
        spec.recover()
        spec.close()


def test_settings_are_resent_after_reconnect():
    steps = IDENTIFY + [(b"I300000\r\n", ACK)] + IDENTIFY[:5] + [
        (b"I300000\r\n", ACK), (b"?I\r\n", ACK + b"300000\r\n"), (b"?A\r\n", ACK + b"1\r\n")]
    with ExpectedProtocol(steps) as peer:
        spec = make(peer)
        spec.identify()
        spec.set_integration_us(300_000)
        spec.recover()
        spec.close()
    assert spec.integration_us == 300_000


def test_a_different_serial_after_reconnect_is_a_link_error():
    other = [(b"?x0\r\n", ACK + b"SPX9999999\r\n") if s[0] == b"?x0\r\n" else s for s in IDENTIFY[:5]]
    with ExpectedProtocol(IDENTIFY + other) as peer:
        spec = make(peer)
        spec.identify()
        with pytest.raises(LinkError) as err:
            spec.recover()
    assert "SPX9999999" in err.value.what and "SPX0000042" in err.value.what


def test_truncated_binary_block_is_a_protocol_error_then_resync():
    steps = IDENTIFY + [(b"S\r\n", STX + BLOCK[:17]), (b"bB\r\n", ACK), (b"S\r\n", STX + BLOCK)]
    with ExpectedProtocol(steps) as peer:
        spec = make(peer)
        spec.identify()
        with pytest.raises(ProtocolError) as err:
            spec.acquire()
        assert "sent 5 of 12 expected bytes" in err.value.what
        assert spec.acquire().tolist() == [1000, 1200, 65535, 1001]
        spec.close()


def test_corrupted_block_fails_the_checksum():
    bad = bytearray(BLOCK)
    bad[13] ^= 0x01  # one bit of a count
    with ExpectedProtocol(IDENTIFY + [(b"S\r\n", STX + bytes(bad))]) as peer:
        spec = make(peer)
        spec.identify()
        with pytest.raises(ProtocolError) as err:
            spec.acquire()
        spec.close()
    assert "checksum" in err.value.what


def test_garbage_instead_of_ack_then_the_next_command_resyncs_first():
    steps = IDENTIFY + [(b"J1\r\n", b"\xfe\xff\x00"), (b"bB\r\n", ACK), (b"J1\r\n", ACK)]
    with ExpectedProtocol(steps) as peer:
        spec = make(peer)
        spec.identify()
        with pytest.raises(ProtocolError) as err:
            spec.set_lamp(True)
        assert "instead of ACK" in err.value.what
        spec.set_lamp(True)
        spec.close()


def test_silence_is_a_reply_timeout():
    with ExpectedProtocol([(b"bB\r\n", b"")]) as peer:
        spec = make(peer)
        with pytest.raises(ReplyTimeout):
            spec.identify()


# -- the driver on arbitrary replies ------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reply=st.one_of(st.binary(max_size=40), st.binary(max_size=30).map(lambda b: STX + BLOCK[:12] + b)),
       command=st.sampled_from(["S", "?x1", "J1"]))
def test_arbitrary_replies_raise_only_driver_errors(reply, command):
    """Whatever the device sends back, the caller sees a value or a DriverError."""
    request = command.encode() + b"\r\n"
    with ExpectedProtocol(IDENTIFY + [(request, reply)]) as peer:
        spec = SerialSpectrometer(SerialLink(peer.port, baudrate=115200, timeout=0.1), reply_timeout=0.1)
        spec.identify()
        # One exchange each: a reply that happens to be valid must not lead the
        # driver on to a command the script does not expect.
        action = {"S": spec.acquire, "J1": lambda: spec.set_lamp(True),
                  "?x1": lambda: wire.parse_float(spec._query("?x1"), "c0")}
        try:
            action[command]()
        except DriverError as e:
            assert e.what and e.fix
        spec.close()
