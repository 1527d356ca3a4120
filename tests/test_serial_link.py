"""SerialLink timing edges over a real pty (the device end written by the test)."""

from __future__ import annotations

import os
import threading
import tty

import pytest

from drivers.errors import ProtocolError, ReplyTimeout
from drivers.serial_link import SerialLink

LINE = b'I4 A "SIM0000001"'


@pytest.fixture
def pty_pair():
    master, slave = os.openpty()
    tty.setraw(slave)
    link = SerialLink(os.ttyname(slave))
    link.open()
    yield master, link
    link.close()
    os.close(master)
    os.close(slave)


def test_a_line_arriving_during_the_last_poll_is_never_split(pty_pair):
    """The driver's read polls in 50 ms steps. A line whose bytes arrive together
    while the poll that straddles the deadline is running used to lose its first
    byte with the "partial line" and leave the rest, ``4 A "SIM0000001"``, on the
    line as a bogus reply of its own (what a balance's late ``I4 A`` did after a
    replug). Whatever the timing, the line is read whole: now or by the next read."""
    master, link = pty_pair
    seen = []
    for delay_ms in (80, 85, 90, 95, 100, 105, 110, 115):  # 75 ms deadline, inside the 50-100 ms poll
        timer = threading.Timer(delay_ms / 1000, os.write, (master, LINE + b"\r\n"))
        timer.start()
        try:
            got = link.read_line(0.075)
        except (ReplyTimeout, ProtocolError):
            timer.join()
            got = link.read_line(1.0)
        timer.join()
        seen.append(got)
    assert seen == [LINE] * len(seen)
    assert not any("partial" in line for line in link.transcript())


def test_bytes_already_waiting_are_read_even_at_a_zero_timeout(pty_pair):
    master, link = pty_pair
    os.write(master, LINE + b"\r\nS S     0.0998 g\r\n")
    assert link.read_line(1.0) == LINE  # makes sure both lines are in the kernel's buffer
    assert link.read_line(0) == b"S S     0.0998 g"
    with pytest.raises(ReplyTimeout):
        link.read_line(0)


def test_read_exact_takes_no_more_than_asked(pty_pair):
    master, link = pty_pair
    os.write(master, bytes(range(10)))
    assert link.read_exact(4, 1.0) == bytes(range(4))
    assert link.read_exact(6, 0) == bytes(range(4, 10))
