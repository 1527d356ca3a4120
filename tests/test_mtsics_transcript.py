"""Exact bytes on the wire between MtSicsBalance and a scripted pty peer."""

import pytest

from drivers.errors import DeviceRefused, LinkError, ProtocolError
from drivers.mtsics import Identity, MtSicsBalance, Weight
from drivers.serial_link import SerialLink

try:
    from tests.protocol import ExpectedProtocol
except ImportError:  # tests/ is not a package; pytest puts it on sys.path
    from protocol import ExpectedProtocol

SERIAL = b"B525073136"
MODEL = b"XS205DU Excellence 220.0090 g"
IDENTIFY = [
    (b"@\r\n", b'I4 A "' + SERIAL + b'"\r\n'),
    (b"I2\r\n", b'I2 A "' + MODEL + b'"\r\n'),
    (b"I4\r\n", b'I4 A "' + SERIAL + b'"\r\n'),
]
RESYNC = [(b"@\r\n", b'I4 A "' + SERIAL + b'"\r\n')]
REPLY_TIMEOUT = 0.3


def make_balance(peer, **kw) -> MtSicsBalance:
    link = SerialLink(peer.port, timeout=REPLY_TIMEOUT)
    return MtSicsBalance(link, reply_timeout=REPLY_TIMEOUT, stable_timeout=0.6, **kw)


def test_connect_identifies_with_reset_i2_i4():
    with ExpectedProtocol(IDENTIFY) as peer:
        bal = make_balance(peer)
        ident = bal.connect()
        bal.close()
    assert ident == Identity(
        model=MODEL.decode(),
        serial=SERIAL.decode(),
        raw=("> I2", f'< I2 A "{MODEL.decode()}"', "> I4", f'< I4 A "{SERIAL.decode()}"'),
    )


def test_resync_skips_power_up_line_junk_and_late_replies():
    noisy_reset = (
        b"@\r\n",
        b"\xff\xfe\x00\r\nS S     0.0998 g\r\nZ A\r\n" + b'I4 A "' + SERIAL + b'"\r\n',
    )
    with ExpectedProtocol([(None, b'I4 A "' + SERIAL + b'"\r\n'), noisy_reset] + IDENTIFY[1:]) as peer:
        bal = make_balance(peer)
        assert bal.connect().serial == SERIAL.decode()
        bal.close()


def test_power_up_line_racing_the_reset_reply_does_not_shift_replies():
    # Power-up I4 A and the answer to @ look the same; whichever comes first,
    # the second must not be taken for the answer to I2.
    twice = (b"@\r\n", (b'I4 A "' + SERIAL + b'"\r\n') * 2)
    with ExpectedProtocol([twice] + IDENTIFY[1:]) as peer:
        bal = make_balance(peer)
        assert bal.connect().model == MODEL.decode()
        bal.close()


def test_resync_resends_reset_when_it_arrived_garbled():
    with ExpectedProtocol([(b"@\r\n", b"ET\r\n")] + IDENTIFY) as peer:
        bal = make_balance(peer)
        assert bal.connect().serial == SERIAL.decode()
        bal.close()


def test_wrong_serial_is_refused_and_port_released():
    with ExpectedProtocol(IDENTIFY) as peer:
        bal = make_balance(peer, expected_serial="1126493049", serial_setting="devices.scale.serial")
        with pytest.raises(LinkError) as info:
            bal.connect()
        assert not bal.link.is_open
    msg = str(info.value)
    assert f"a different balance (serial {SERIAL.decode()}) answers on {peer.port}" in msg
    assert "expected 1126493049" in msg
    assert "devices.scale.serial" in info.value.fix


@pytest.fixture
def connected():
    """Yield (peer_factory) that connects a balance before the test's own steps."""

    class Session:
        def __init__(self, steps):
            self.peer = ExpectedProtocol(IDENTIFY + steps)

        def __enter__(self):
            self.peer.__enter__()
            self.bal = make_balance(self.peer)
            self.bal.connect()
            return self.bal

        def __exit__(self, *exc):
            self.bal.close()
            return self.peer.__exit__(*exc)

    return Session


def test_weigh_stable(connected):
    with connected([(b"S\r\n", b"S S      0.0998 g\r\n")]) as bal:
        w = bal.weigh_stable()
    assert w == Weight(99_800, True, "g", ("> S", "< S S      0.0998 g"))


def test_weigh_now_dynamic_and_negative(connected):
    with connected([(b"SI\r\n", b"S D    -0.0012 g\r\n"), (b"SI\r\n", b"S S     12.5 mg\r\n")]) as bal:
        assert bal.weigh_now() == Weight(-1_200, False, "g", ("> SI", "< S D    -0.0012 g"))
        assert bal.weigh_now().value_ug == 12_500


def test_zero(connected):
    with connected([(b"Z\r\n", b"Z A\r\n")]) as bal:
        assert bal.zero() is None


@pytest.mark.parametrize(
    ("method", "sent", "reply", "words", "fix"),
    [
        ("weigh_stable", b"S", b"S I", "not stable in time (S I)", "draft shield"),
        ("weigh_stable", b"S", b"S +", "overload (S +)", "above capacity"),
        ("weigh_stable", b"S", b"S -", "underload (S -)", "zero the balance / put the pan back"),
        ("weigh_now", b"SI", b"S +", "overload", "remove the load"),
        ("zero", b"Z", b"Z I", "not stable in time (Z I)", "keep the desk still"),
        ("zero", b"Z", b"Z +", "overload (Z +)", "remove the load"),
        ("weigh_stable", b"S", b"ES", "syntax error (ES)", "baud rate and framing"),
        ("weigh_now", b"SI", b"ET", "transmission error (ET)", "baud rate and framing"),
        ("zero", b"Z", b"EL", "logical error (EL)", "baud rate and framing"),
        ("weigh_stable", b"S", b"S L", "rejected a parameter", "bad parameter"),
    ],
)
def test_refusals_are_typed_and_keep_the_link_in_step(connected, method, sent, reply, words, fix):
    # A refusal is a well-formed answer: no resync, the next command goes straight out.
    steps = [(sent + b"\r\n", reply + b"\r\n"), (b"SI\r\n", b"S S      0.0000 g\r\n")]
    with connected(steps) as bal:
        with pytest.raises(DeviceRefused) as info:
            getattr(bal, method)()
        assert bal.weigh_now().value_ug == 0
    err = info.value
    assert words in err.what and fix in err.fix
    assert f"> {sent.decode()}" in err.transcript
    assert f"< {reply.decode()}" in err.transcript


@pytest.mark.parametrize(
    ("method", "cmd", "bad_reply", "expected"),
    [
        ("weigh_stable", b"S", b"\x8f\xa0\xfe\x13garbage\r\n", r"b'\x8f\xa0\xfe\x13garbage'"),
        ("weigh_now", b"SI", b"S S     0.09", "partial line arrived"),  # no CR LF before the timeout
        ("weigh_stable", b"S", b'I2 A "' + MODEL + b'"\r\n', "out of step"),
    ],
    ids=["garbage", "partial-line", "out-of-step"],
)
def test_bad_reply_is_a_protocol_error_then_reset_and_next_command_works(connected, method, cmd, bad_reply, expected):
    steps = [(cmd + b"\r\n", bad_reply)] + RESYNC + [(cmd + b"\r\n", b"S S      0.0998 g\r\n")]
    with connected(steps) as bal:
        with pytest.raises(ProtocolError) as info:
            getattr(bal, method)()
        assert getattr(bal, method)().value_ug == 99_800
    assert expected in info.value.what
    assert f"> {cmd.decode()}" in info.value.transcript


def test_timeout_is_a_link_error_and_next_command_resyncs_first(connected):
    steps = [(b"SI\r\n", b"")] + RESYNC + [(b"SI\r\n", b"S S      0.0998 g\r\n")]
    with connected(steps) as bal:
        with pytest.raises(LinkError) as info:
            bal.weigh_now()
        assert bal.weigh_now().value_ug == 99_800
    err = info.value
    assert f"no reply from {bal.link.url} within {REPLY_TIMEOUT:g} s" in err.what
    assert "baud rate" in err.fix and "powered" in err.fix
    assert err.transcript[-1] == "> SI"
    assert "Last lines:" in str(err)


def test_stable_weighing_waits_for_the_stable_timeout_not_the_reply_timeout(connected):
    import time

    with connected([(b"S\r\n", b"")]) as bal:
        start = time.monotonic()
        with pytest.raises(LinkError, match="within 0.6 s"):
            bal.weigh_stable()
        assert time.monotonic() - start >= 0.55


def test_unsolicited_power_up_line_is_skipped_and_kept_in_raw(connected):
    steps = [(b"SI\r\n", b'I4 A "' + SERIAL + b'"\r\nS S      0.0998 g\r\n')]
    with connected(steps) as bal:
        w = bal.weigh_now()
    assert w.value_ug == 99_800
    assert w.raw == ("> SI", f'< I4 A "{SERIAL.decode()}"', "< S S      0.0998 g")


def test_the_peer_itself_fails_on_unexpected_bytes():
    with pytest.raises(AssertionError, match=r"expected b'S\\r\\n', the driver sent b'SI\\r'"):
        with ExpectedProtocol([(b"S\r\n", b"S S      0.0998 g\r\n")]) as peer:
            link = SerialLink(peer.port)
            link.open()
            link.write_line("SI")
            with pytest.raises(LinkError):
                link.read_line(0.2)
            link.close()
    with pytest.raises(AssertionError, match="after the script"):
        with ExpectedProtocol([]) as peer:
            with SerialLink(peer.port) as link:
                link.write_line("Z")
    with pytest.raises(AssertionError, match="stopped before step 1"):
        with ExpectedProtocol([(b"Z\r\n", b"Z A\r\n")], step_timeout=0.2):
            pass


def test_tare(connected):
    with connected([(b"T\r\n", b"T S      0.0998 g\r\n")]) as bal:
        assert bal.tare() is None
    assert bal.link.transcript()[-2:] == ["> T", "< T S      0.0998 g"]


@pytest.mark.parametrize(
    ("reply", "words", "fix"),
    [(b"T I", "not stable in time (T I)", "draft shield"), (b"T +", "overload (T +)", "remove the load"),
     (b"ES", "syntax error (ES)", "baud rate and framing")],
)
def test_tare_refusals_keep_the_link_in_step(connected, reply, words, fix):
    steps = [(b"T\r\n", reply + b"\r\n"), (b"SI\r\n", b"S S      0.0000 g\r\n")]
    with connected(steps) as bal:
        with pytest.raises(DeviceRefused) as info:
            bal.tare()
        assert bal.weigh_now().value_ug == 0
    assert words in info.value.what and fix in info.value.fix


def test_tare_answered_with_a_status_line_is_out_of_step(connected):
    steps = [(b"T\r\n", b"Z A\r\n")] + RESYNC
    with connected(steps) as bal:
        with pytest.raises(ProtocolError, match="expected T S <value> <unit>"):
            bal.tare()


@pytest.mark.parametrize("method", ["weigh_now", "weigh_stable"])
def test_a_balance_set_to_oz_is_one_refusal_without_resync(connected, method):
    cmd = b"SI" if method == "weigh_now" else b"S"
    steps = [(cmd + b"\r\n", b"S S     0.0035 oz\r\n"), (cmd + b"\r\n", b"S S     0.0035 oz\r\n")]
    with connected(steps) as bal:
        for _ in range(2):  # every poll: the same one message, no "@" between them
            with pytest.raises(DeviceRefused) as info:
                getattr(bal, method)()
            assert info.value.what == "the balance is set to oz; set it to g or ct"
            assert "weighing unit" in info.value.fix
    assert info.value.transcript[-2:] == [f"> {cmd.decode()}", "< S S     0.0035 oz"]
