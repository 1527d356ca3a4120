"""Exact bytes on the wire between SbiBalance and a scripted pty peer."""

import os
import select
import threading
import tty

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import Identity, Weight
from drivers.sbi import SbiBalance
from drivers.serial_link import SerialLink

try:
    from tests.protocol import ExpectedProtocol
except ImportError:  # tests/ is not a package; pytest puts it on sys.path
    from protocol import ExpectedProtocol

SERIAL = b"0034309393"
MODEL = b"BCE224I-1S"
ZERO = b"+   0.0000 g  \r\n"
STONE = b"+   0.0998 g  \r\n"
PRINT = (b"\x1bP", ZERO)
IDENTIFY = [PRINT, (b"\x1bx1_", MODEL + b"\r\n"), (b"\x1bx2_", SERIAL + b"\r\n")]
REPLY_TIMEOUT = 0.3


def make_balance(peer, **kw) -> SbiBalance:
    link = SerialLink(peer.port, baudrate=1200, bytesize=7, parity="O", rtscts=True, timeout=REPLY_TIMEOUT)
    kw.setdefault("stable_timeout", 0.6)
    return SbiBalance(link, reply_timeout=REPLY_TIMEOUT, poll_s=0.01, **kw)


class Connected:
    def __init__(self, steps, **kw):
        self.peer = ExpectedProtocol(IDENTIFY + steps)
        self.kw = kw

    def __enter__(self) -> SbiBalance:
        self.peer.__enter__()
        self.bal = make_balance(self.peer, **self.kw)
        self.bal.connect()
        return self.bal

    def __exit__(self, *exc):
        self.bal.close()
        return self.peer.__exit__(*exc)


def test_connect_resyncs_then_asks_model_and_serial():
    with ExpectedProtocol(IDENTIFY) as peer:
        bal = make_balance(peer)
        ident = bal.connect()
        bal.close()
    assert ident == Identity(
        model=MODEL.decode(), serial=SERIAL.decode(),
        raw=("> ESC x1_", f"< {MODEL.decode()}", "> ESC x2_", f"< {SERIAL.decode()}"),
    )
    assert bal.link.transcript()[:2] == ["> ESC P", "< +   0.0000 g  "]


def test_quoted_or_padded_identity_text_is_trimmed():
    steps = [PRINT, (b"\x1bx1_", b'"BCE224I-1S"   \r\n'), (b"\x1bx2_", b"  0034309393\r\n")]
    with ExpectedProtocol(steps) as peer:
        bal = make_balance(peer)
        assert bal.connect() == Identity("BCE224I-1S", "0034309393",
                                         ("> ESC x1_", '< "BCE224I-1S"   ', "> ESC x2_", "<   0034309393"))
        bal.close()


def test_resync_skips_noise_and_stale_lines_before_the_print_line():
    noisy = (b"\x1bP", b"\x8f\xa0garbage\r\n" + b"+   0.09\r\n" + ZERO)
    with ExpectedProtocol([noisy] + IDENTIFY[1:]) as peer:
        bal = make_balance(peer)
        assert bal.connect().serial == SERIAL.decode()
        bal.close()


def test_old_model_without_identification_is_proven_by_a_print_line():
    with ExpectedProtocol([PRINT]) as peer:
        bal = make_balance(peer, identify=False, expected_serial="12345")
        assert bal.connect() == Identity("Sartorius (SBI)", "12345")
        bal.close()


def test_no_answer_to_the_serial_command_names_the_identify_setting():
    with ExpectedProtocol(IDENTIFY[:2] + [(b"\x1bx2_", b"")]) as peer:
        bal = make_balance(peer, identify_setting="devices.scale.identify")
        with pytest.raises(LinkError) as info:
            bal.connect()
        assert not bal.link.is_open
    assert "did not answer ESC x2_ (serial number)" in info.value.what
    assert "devices.scale.identify set to false" in info.value.fix


def test_wrong_serial_is_refused_and_port_released():
    with ExpectedProtocol(IDENTIFY) as peer:
        bal = make_balance(peer, expected_serial="0099999999", serial_setting="devices.scale.serial")
        with pytest.raises(LinkError) as info:
            bal.connect()
        assert not bal.link.is_open
    assert f"a different balance (serial {SERIAL.decode()}) answers on {peer.port}" in info.value.what
    assert "expected 0099999999" in info.value.what and "devices.scale.serial" in info.value.fix


def test_print_line_in_answer_to_the_model_query_is_out_of_step():
    steps = [PRINT, (b"\x1bx1_", STONE), PRINT]
    with ExpectedProtocol(steps) as peer:
        bal = make_balance(peer)
        with pytest.raises(ProtocolError, match="out of step: a print line in answer to ESC x1_"):
            bal.connect()


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (b"+   0.0998 g  \r\n", Weight(99_800, True, "g", ("> ESC P", "< +   0.0998 g  "))),
        (b"+   0.0998    \r\n", Weight(99_800, False, "g", ("> ESC P", "< +   0.0998    "))),
        (b"-   0.0012 g  \r\n", Weight(-1_200, True, "g", ("> ESC P", "< -   0.0012 g  "))),
        (b"      12.5 mg \r\n", Weight(12_500, True, "mg", ("> ESC P", "<       12.5 mg "))),
        (b"+   0.4990 ct \r\n", Weight(99_800, True, "ct", ("> ESC P", "< +   0.4990 ct "))),
        (b"+ 0.000998 kg \r\n", Weight(998_000, True, "kg", ("> ESC P", "< + 0.000998 kg "))),
        (b"+1234.5678 g  \r\n", Weight(1_234_567_800, True, "g", ("> ESC P", "< +1234.5678 g  "))),
        (b"N     +   0.0998 g  \r\n", Weight(99_800, True, "g", ("> ESC P", "< N     +   0.0998 g  "))),
        (b"G     +   0.0998    \r\n", Weight(99_800, False, "g", ("> ESC P", "< G     +   0.0998    "))),
    ],
    ids=["stable", "dynamic", "negative", "mg", "ct", "kg", "nine-wide", "22-stable", "22-dynamic"],
)
def test_weigh_now_reply_shapes(reply, expected):
    with Connected([(b"\x1bP", reply)]) as bal:
        assert bal.weigh_now() == expected


def test_dynamic_line_is_read_in_the_unit_last_printed():
    steps = [(b"\x1bP", b"+   0.4990 ct \r\n"), (b"\x1bP", b"+   0.5000    \r\n")]
    with Connected(steps) as bal:
        bal.weigh_now()
        assert bal.weigh_now() == Weight(100_000, False, "ct", ("> ESC P", "< +   0.5000    "))


def test_weigh_stable_prints_until_the_unit_appears():
    steps = [(b"\x1bP", b"+   0.1003    \r\n"), (b"\x1bP", b"+   0.0999    \r\n"), (b"\x1bP", STONE)]
    with Connected(steps) as bal:
        assert bal.weigh_stable() == Weight(99_800, True, "g", ("> ESC P", "< +   0.0998 g  "))


class TickingClock:
    """Advances a fixed step per reading: the number of polls is deterministic."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_weigh_stable_gives_up_at_the_stable_timeout():
    # Binary-exact ticks: deadline 0.125 + 1.0; each poll reads the clock twice,
    # polls end at 0.375, 0.625, 0.875, 1.125, and 1.125 + 0.01 > 1.125 stops.
    steps = [(b"\x1bP", b"+   0.1003    \r\n")] * 4
    with ExpectedProtocol(IDENTIFY + steps) as peer:
        bal = make_balance(peer, stable_timeout=1.0, clock=TickingClock(0.125))
        bal.connect()
        with pytest.raises(DeviceRefused) as info:
            bal.weigh_stable()
        bal.close()
    assert "not stable within 1 s (weigh)" in info.value.what
    assert "'+   0.1003    '" in info.value.what and "draft shield" in info.value.fix


@pytest.mark.parametrize(
    ("method", "cmd", "kw"),
    [("zero", b"\x1bV", {}), ("tare", b"\x1bU", {}), ("tare", b"\x1bT", {"tare_command": b"T"})],
    ids=["zero-V", "tare-U", "tare-T"],
)
def test_zero_and_tare_are_proven_by_a_stable_zero(method, cmd, kw):
    steps = [(cmd, b""), (b"\x1bP", b"+   0.0003    \r\n"), (b"\x1bP", ZERO)]
    with Connected(steps, **kw) as bal:
        assert getattr(bal, method)() is None
    assert bal.link.transcript()[-5:] == [
        f"> ESC {cmd[1:].decode()}", "> ESC P", "< +   0.0003    ", "> ESC P", "< +   0.0000 g  ",
    ]


def test_a_zero_within_one_digit_counts_and_beyond_it_is_refused():
    steps = [(b"\x1bV", b""), (b"\x1bP", b"-   0.0001 g  \r\n"),
             (b"\x1bV", b""), (b"\x1bP", b"+   0.0002 g  \r\n")]
    with Connected(steps) as bal:
        bal.zero()
        with pytest.raises(DeviceRefused) as info:
            bal.zero()
    assert info.value.what == "the balance did not zero: it reads +0.0002 g after ESC V"
    assert "near its power-up zero" in info.value.fix


def test_a_tare_that_does_not_read_zero_is_refused():
    with Connected([(b"\x1bU", b""), (b"\x1bP", b"+   0.0150 g  \r\n")]) as bal:
        with pytest.raises(DeviceRefused) as info:
            bal.tare()
    assert info.value.what == "the balance did not tare: it reads +0.0150 g after ESC U"
    assert "tare again" in info.value.fix


@pytest.mark.parametrize(
    ("reply", "words", "fix"),
    [
        (b"      H       ", "overload (H)", "above capacity"),
        (b"      HH      ", "overload (HH)", "above capacity"),
        (b"      L       ", "underload (L)", "put the pan back"),
        (b"      C       ", "is adjusting (C)", "adjustment to finish"),
        (b"Stat     High       ", "overload (High)", "above capacity"),
        (b"Stat     Low        ", "underload (Low)", "put the pan back"),
        (b"   Err 02     ", "error 02", "manual"),
        (b"Stat     ERR 101    ", "error 101", "manual"),
        (b"-   0.0035 oz ", "the balance is set to oz; set it to g or ct", "weighing unit"),
        (b"+   12     pcs", "the balance is set to pcs; set it to g or ct", "weighing unit"),
    ],
)
def test_refusals_are_typed_and_keep_the_link_in_step(reply, words, fix):
    # A refusal is a well-formed answer: no resync, the next command goes straight out.
    steps = [(b"\x1bP", reply + b"\r\n"), (b"\x1bP", ZERO)]
    with Connected(steps) as bal:
        with pytest.raises(DeviceRefused) as info:
            bal.weigh_now()
        assert bal.weigh_now().value_ug == 0
    assert words in info.value.what and fix in info.value.fix
    assert info.value.transcript[-2:] == ["> ESC P", f"< {reply.decode()}"]


def test_overload_during_weigh_stable_is_refused_at_once():
    with Connected([(b"\x1bP", b"      H       \r\n")]) as bal:
        with pytest.raises(DeviceRefused, match="overload"):
            bal.weigh_stable()


@pytest.mark.parametrize(
    ("bad_reply", "expected"),
    [
        (b"\x8f\xa0\xfe\x13garbage\r\n", "non-printable"),
        (b"+   0.09", "partial line arrived"),  # no CR LF before the timeout
        (b"+    0.0998 g  \r\n", "17 characters with CR LF"),
        (b"+  0.0998 g  \r\n", "15 characters with CR LF"),
        (b"+   0.0998 g1 \r\n", "no unit"),
        (b"*   0.0998 g  \r\n", "position 1 must be a sign"),
    ],
    ids=["garbage", "partial", "17-chars", "15-chars", "bad-unit", "bad-sign"],
)
def test_bad_line_is_a_protocol_error_then_resync_and_next_command_works(bad_reply, expected):
    steps = [(b"\x1bP", bad_reply), PRINT, (b"\x1bP", STONE)]
    with Connected(steps) as bal:
        with pytest.raises(ProtocolError) as info:
            bal.weigh_now()
        assert bal.weigh_now().value_ug == 99_800
    assert expected in info.value.what
    assert "> ESC P" in info.value.transcript


def test_timeout_is_a_link_error_naming_the_framing_and_next_command_resyncs_first():
    steps = [(b"\x1bP", b""), PRINT, (b"\x1bP", STONE)]
    with Connected(steps, framing_setting="devices.scale.baudrate/bytesize/parity/rtscts") as bal:
        with pytest.raises(ReplyTimeout) as info:
            bal.weigh_now()
        assert bal.weigh_now().value_ug == 99_800
    err = info.value
    assert f"no reply from {bal.link.url} within {REPLY_TIMEOUT:g} s" in err.what
    assert "devices.scale.baudrate/bytesize/parity/rtscts" in err.fix and "1200 baud" in err.fix
    assert err.transcript[-1] == "> ESC P"


def test_the_balance_that_never_prints_a_valid_line_does_not_resynchronise():
    junk = b"\x8f\x8f\r\n" * 8
    with ExpectedProtocol([(b"\x1bP", junk), (b"\x1bP", junk)]) as peer:
        bal = make_balance(peer)
        with pytest.raises(ProtocolError, match="did not resynchronise"):
            bal.connect()
        assert not bal.link.is_open


class AnsweringPeer:
    """A pty peer that answers each ESC P with the next queued line, else ZERO."""

    def __init__(self) -> None:
        self.queue: list[bytes] = []
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        buf = b""
        while not self._stop.is_set():
            if not select.select([self._master], [], [], 0.02)[0]:
                continue
            buf += os.read(self._master, 1024)
            while b"\x1b" in buf:
                buf = buf.partition(b"\x1b")[2]
                if buf[:1] == b"P":
                    os.write(self._master, self.queue.pop(0) if self.queue else ZERO)
                buf = buf[1:]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        os.close(self._master)
        os.close(self._slave)


@pytest.fixture(scope="module")
def answering():
    peer = AnsweringPeer()
    link = SerialLink(peer.port, timeout=REPLY_TIMEOUT)
    bal = SbiBalance(link, reply_timeout=REPLY_TIMEOUT, identify=False)
    bal.connect()
    yield peer, bal
    bal.close()
    peer.close()


_ONE_LINE = st.binary(max_size=24).filter(lambda b: b"\n" not in b and b"\r" not in b)


@settings(max_examples=30, deadline=None)
@given(_ONE_LINE)
def test_arbitrary_replies_raise_only_protocol_error_or_refusal(answering, data):
    peer, bal = answering
    peer.queue.append(data + b"\r\n")
    try:
        w = bal.weigh_now()
    except (ProtocolError, DeviceRefused):
        pass
    else:
        assert isinstance(w.value_ug, int) and w.raw == ("> ESC P", f"< {data.decode('ascii')}")
    assert bal.weigh_now() == Weight(0, True, "g", ("> ESC P", "< " + ZERO[:-2].decode()))
