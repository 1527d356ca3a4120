"""Sartorius SBI: a scale driver over a ``SerialLink`` (the print-line grammar
is ``drivers/sbi_format.py``).

Commands are ``ESC`` and a letter, sent without CR LF (the manuals call the
terminator optional):

    ESC P    print one line (weigh)           ESC x1_  model (one text line)
    ESC V    zero (no answer)                 ESC x2_  serial number of the weigh cell
    ESC U    tare (no answer)                 ESC T    tare/zero, like the TARE key
    ESC S    restart (not used)

Zero and tare are not acknowledged, so the driver proves them: it prints
until a stable line and checks that it reads zero. SBI has no reset command
with a known answer; after garbage or a timeout the driver drains the line
and prints until a well-formed line comes back (``resync``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from drivers.errors import DeviceRefused, LinkError, ProtocolError, ReplyTimeout
from drivers.identify import RESYNC_LINES, LineSession
from drivers.kinds import Identity, Weight
from drivers.sbi_format import (
    FIX_RESYNC, UNIT_UG, ErrorLine, ForeignUnit, Reading, Reply, Special, parse_line,
)
from drivers.serial_link import SerialLink

ESC = b"\x1b"
_RESYNC_ROUNDS = 2
_MAX_INFO = 40

_SPECIALS = {
    "H": ("reports overload ({})", "remove the load; the stone is above capacity"),
    "L": ("reports underload ({})", "put the pan back and zero the balance"),
    "C": ("is adjusting ({})", "wait for the adjustment to finish, then weigh again"),
}

_ADJUST_FIX = {
    "zero": "clear the pan and zero again: the balance zeroes only near its power-up zero "
            "(use tare for a container)",
    "tare": "keep the pan and the desk still and tare again; restart the balance if it persists",
}


class SbiBalance(LineSession):
    """A Sartorius balance in SBI mode. Implements ``drivers.kinds.Scale``.

    ``*_setting`` name where the user changes things (config keys), so fix
    hints point at them; the driver itself knows nothing of the config.
    """

    def __init__(
        self,
        link: SerialLink,
        *,
        expected_serial: str | None = None,
        serial_setting: str = "the expected serial number in the config",
        framing_setting: str = "the baud rate, data bits, parity and handshake in the config",
        identify_setting: str = "the driver's identify option",
        identify: bool = True,
        tare_command: bytes = b"U",
        unit: str = "g",
        reply_timeout: float = 2.0,
        stable_timeout: float = 10.0,
        poll_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if tare_command not in (b"U", b"T"):
            raise ValueError("tare_command is b'U' (tare) or b'T' (the TARE key)")
        if unit not in UNIT_UG:
            raise ValueError(f"unit must be one of {sorted(UNIT_UG)}")
        self.link = link
        self.expected_serial = expected_serial
        self.serial_setting, self.framing_setting = serial_setting, framing_setting
        self.identify_setting = identify_setting
        self.use_identify = identify
        self.tare_command = tare_command
        # A dynamic line prints no unit; its value is read in the unit the
        # balance last printed (or this one, before any stable line).
        self.unit = unit
        self.reply_timeout, self.stable_timeout = reply_timeout, stable_timeout
        self.poll_s, self.clock = poll_s, clock
        self.identity: Identity | None = None
        # Set after a timeout or failed recovery: a late line may still be on
        # its way, so the next command starts with a resync.
        self._dirty = False

    @property
    def fix_framing(self) -> str:
        return (
            f"check {self.framing_setting} against the balance's interface menu (SBI mode; "
            "the Sartorius factory default is 1200 baud, 7 data bits, odd parity, 1 stop bit, "
            "RTS/CTS handshake)"
        )

    # -- session (connect, reconnect, close: drivers/identify.py) -----------

    @property
    def _checks_serial(self) -> bool:
        return self.use_identify

    def _identify(self) -> Identity:
        self.resync()
        if not self.use_identify:
            # Old models without ESC x1_/x2_: a well-formed print line proves
            # a balance is there, but not which one.
            return Identity(model="Sartorius (SBI)", serial=self.expected_serial or "unknown")
        model, raw1 = self._info(b"x1_", "model")
        serial, raw2 = self._info(b"x2_", "serial number")
        return Identity(model=model, serial=serial, raw=raw1 + raw2)

    def _info(self, cmd: bytes, what: str) -> tuple[str, tuple[str, ...]]:
        shown = f"ESC {cmd.decode()}"
        self._send(cmd)
        with self._recovering():
            try:
                line = self.link.read_line(self.reply_timeout)
            except ReplyTimeout as e:
                raise LinkError(
                    f"the balance on {self.link.url} did not answer {shown} ({what})",
                    f"{self.fix_framing}; a model without identification commands needs "
                    f"{self.identify_setting} set to false",
                    transcript=self.link.transcript(),
                ) from e
        text = line.decode("ascii", "replace").strip(' "')
        if not text or len(text) > _MAX_INFO or any(b < 0x20 or b > 0x7E for b in line):
            err = ProtocolError(
                f"the balance answered {shown} ({what}) with {line!r}", FIX_RESYNC,
                transcript=self.link.transcript(),
            )
            self._recover()
            raise err
        try:
            parse_line(line)
        except ProtocolError:
            return text, (f"> {shown}", f"< {line.decode('ascii')}")
        err = ProtocolError(
            f"balance on {self.link.url} is out of step: a print line in answer to {shown} ({text!r})",
            FIX_RESYNC, transcript=self.link.transcript(),
        )
        self._recover()
        raise err

    def resync(self) -> None:
        """Drain the line, then print until a well-formed line comes back."""
        for _ in range(_RESYNC_ROUNDS):
            self.link.discard_input()
            self._drain()
            self._send(b"P")
            for _ in range(RESYNC_LINES):
                try:
                    with self._link_errors():
                        parse_line(self.link.read_line(self.reply_timeout))
                except ProtocolError:
                    continue
                self._drain()
                self._dirty = False
                return
        self._dirty = True
        raise ProtocolError(
            f"balance on {self.link.url} did not resynchronise: no print line in answer to ESC P",
            f"{FIX_RESYNC}; {self.fix_framing}",
            transcript=self.link.transcript(),
        )

    # -- commands ----------------------------------------------------------

    def weigh_now(self) -> Weight:
        return self._weight(*self._print(self.reply_timeout))

    def weigh_stable(self) -> Weight:
        return self._until_stable("weigh")[0]

    def zero(self) -> None:
        self._adjust(b"V", "zero")

    def tare(self) -> None:
        self._adjust(self.tare_command, "tare")

    def _adjust(self, cmd: bytes, what: str) -> None:
        # No acknowledgement: the stable reading afterwards proves it.
        if self._dirty:
            self.resync()
        self._send(cmd)
        w, reading = self._until_stable(what)
        if abs(w.value_ug) > reading.digit_ug(w.unit):
            raise DeviceRefused(
                f"the balance did not {what}: it reads {reading.sign}{reading.number} {w.unit} "
                f"after ESC {cmd.decode()}",
                _ADJUST_FIX[what],
                self.link.transcript(),
            )

    def _until_stable(self, what: str) -> tuple[Weight, Reading]:
        deadline = self.clock() + self.stable_timeout
        while True:
            # A balance set to print "with stability" answers only once it is
            # stable, so the read may take up to the rest of the deadline.
            left = max(deadline - self.clock(), self.reply_timeout)
            reply, raw = self._print(left)
            w = self._weight(reply, raw)
            if w.stable:
                assert isinstance(reply, Reading)  # _weight refused every other reply
                return w, reply
            if self.clock() + self.poll_s > deadline:
                raise DeviceRefused(
                    f"balance was not stable within {self.stable_timeout:g} s ({what}); "
                    f"last line {w.raw[-1][2:]!r}",
                    "close the draft shield, keep the desk still, and weigh again",
                    self.link.transcript(),
                )
            time.sleep(self.poll_s)

    def _weight(self, reply: Reply, raw: tuple[str, ...]) -> Weight:
        transcript = self.link.transcript()
        if isinstance(reply, ForeignUnit):
            raise DeviceRefused(
                f"the balance is set to {reply.unit}; set it to g or ct",
                "change the weighing unit in the balance's menu to g (or ct), then weigh again",
                transcript,
            )
        if isinstance(reply, Special):
            what, fix = _SPECIALS[reply.code]
            raise DeviceRefused(f"balance {what.format(reply.shown)}", fix, transcript)
        if isinstance(reply, ErrorLine):
            raise DeviceRefused(
                f"balance reports error {reply.code} ({reply.raw.strip()})",
                "look the code up in the balance's manual (troubleshooting); clear the pan, "
                "and restart the balance if it persists",
                transcript,
            )
        if reply.unit is not None:
            self.unit = reply.unit
        unit = reply.unit or self.unit
        try:
            ug = reply.micrograms(unit)
        except ValueError as e:  # a dynamic line finer than 1 µg in the assumed unit
            raise ProtocolError(f"cannot read {reply.raw!r} in {unit}: {e}", FIX_RESYNC, transcript) from None
        return Weight(ug, reply.stable, unit, raw)

    def _print(self, timeout: float) -> tuple[Reply, tuple[str, ...]]:
        if self._dirty:
            self.resync()
        with self._recovering(), self._link_errors():
            self._send(b"P")
            reply, shown = self._read_reply(parse_line, timeout)
        return reply, ("> ESC P", shown)

    @contextmanager
    def _link_errors(self) -> Iterator[None]:
        """A failed read may leave a late line in flight: the next command resyncs
        first. Silence gets the SBI hints (framing, automatic printing)."""
        try:
            yield
        except ReplyTimeout as e:
            self._dirty = True
            raise self._silent(e) from e
        except LinkError:
            self._dirty = True
            raise

    def _silent(self, e: ReplyTimeout) -> ReplyTimeout:
        return ReplyTimeout(
            e.what,
            "check the cable, that the balance is on and its interface is in SBI mode with "
            f"automatic printing off; {self.fix_framing}",
            transcript=e.transcript,
        )

    def _send(self, cmd: bytes) -> None:
        try:
            self.link.write(ESC + cmd, shown=f"ESC {cmd.decode()}")
        except LinkError:
            self._dirty = True
            raise
