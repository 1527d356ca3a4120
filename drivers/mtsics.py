"""Mettler Toledo MT-SICS: reply grammar and a balance driver.

Mass is integer micrograms everywhere; values are converted with ``Decimal``
so no float ever touches a weight. The driver speaks to a ``SerialLink`` and
turns every failure into ``LinkError`` (transport), ``ProtocolError`` (bytes
we cannot trust) or ``DeviceRefused`` (the balance said no).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from drivers.errors import DeviceRefused, LinkError, ProtocolError
from drivers.identify import RESYNC_LINES, LineSession
from drivers.kinds import Identity, Weight
from drivers.serial_link import SerialLink
from drivers.units import MAX_VALUE_CHARS, UNIT_UG, exact_micrograms

# Reply identifiers we accept. A word outside this set means we are out of
# step with the balance (or reading noise), so it is a protocol error.
KNOWN_COMMANDS = frozenset(
    "S SI SIR SU SNR Z ZI T TI TA TAC I0 I1 I2 I3 I4 I5 D DW M21".split()
)
FIX_RESYNC = "the driver resynchronises with @; if it repeats, check baud rate and framing"
# A weighing unit the balance can be set to but we do not convert (oz, ozt,
# dwt, GN, lb, tl, mom...): a setting to change, not line noise.
_FOREIGN_UNIT = re.compile(r"[A-Za-z][A-Za-z/.]{0,5}")

_LINE = re.compile(r"(?P<cmd>[A-Z][A-Z0-9]*) +(?P<status>[SDABIL+-])(?: +(?P<rest>.*))?")
_VALUE = re.compile(r"(?P<sign>[+-]?) *(?P<num>\d+(?:\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class WeightReply:
    command: str
    stable: bool
    value_ug: int
    unit: str
    raw: str


@dataclass(frozen=True)
class StatusReply:
    command: str
    status: str
    raw: str


@dataclass(frozen=True)
class InfoReply:
    command: str
    text: str
    raw: str


@dataclass(frozen=True)
class ForeignUnitReply:
    """A well-formed weight in a unit we do not convert (the balance's unit setting)."""

    command: str
    unit: str
    raw: str


@dataclass(frozen=True)
class ErrorReply:
    code: str
    raw: str


Reply = Union[WeightReply, StatusReply, InfoReply, ErrorReply, ForeignUnitReply]


def _bad(raw: bytes, why: str) -> ProtocolError:
    return ProtocolError(f"unparseable MT-SICS reply {raw!r}: {why}", FIX_RESYNC)


def to_micrograms(value: str, unit: str) -> int:
    """Exact conversion of a decimal string in ``unit`` to integer µg."""
    m = _VALUE.fullmatch(value)
    if m is None or len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"not a decimal weight value: {value!r}")
    n = exact_micrograms(m["num"], unit, value)
    return -n if m["sign"] == "-" else n


def parse_line(raw: bytes) -> Reply:
    """Parse one reply line (without CR LF). Raises only ``ProtocolError``."""
    if not raw:
        raise _bad(raw, "empty line")
    if any(b < 0x20 or b > 0x7E for b in raw):
        raise _bad(raw, "non-printable or non-ASCII bytes")
    text = raw.decode("ascii").strip(" ")
    if text in ("ES", "ET", "EL"):
        return ErrorReply(text, text)
    m = _LINE.fullmatch(text)
    if m is None:
        raise _bad(raw, "not '<command> <status> ...'")
    cmd, status, rest = m["cmd"], m["status"], (m["rest"] or "").strip(" ")
    if cmd not in KNOWN_COMMANDS:
        raise _bad(raw, f"unknown command word {cmd!r}")

    if status in "AB" and rest:
        if len(rest) >= 2 and rest[0] == rest[-1] == '"':
            return InfoReply(cmd, rest[1:-1], text)
        if status == "B":  # list replies such as ``I0 B 0 "I0"``
            return InfoReply(cmd, rest, text)
        # otherwise a weight acknowledged with A, e.g. ``TA A    100.00 g``
    if status in "SDA" and rest:
        parts = rest.rsplit(" ", 1)
        if len(parts) != 2:
            raise _bad(raw, "weight reply without a unit")
        value, unit = parts[0].strip(" "), parts[1]
        if unit not in UNIT_UG and _FOREIGN_UNIT.fullmatch(unit) and _VALUE.fullmatch(value):
            return ForeignUnitReply(cmd, unit, text)
        try:
            ug = to_micrograms(value, unit)
        except ValueError as e:
            raise _bad(raw, str(e)) from None
        return WeightReply(cmd, status != "D", ug, unit, text)
    if rest:
        raise _bad(raw, f"status {status!r} takes no value")
    if status in "SD" and cmd != "ZI":  # only ZI answers a bare S/D
        raise _bad(raw, "weight reply without a value")
    return StatusReply(cmd, status, text)


# ---------------------------------------------------------------------------
# Driver


FIX_FRAMING = (
    "check baud rate and framing (default 9600 8N1, no handshake) in the config and on the balance"
)
_ERRORS = {
    "ES": "syntax error (ES): the balance did not recognise the command",
    "ET": "transmission error (ET): the balance received a corrupted command",
    "EL": "logical error (EL): the balance cannot execute the command now",
}
_STATUS = {
    "I": ("was busy or not stable in time",
          "close the draft shield, keep the desk still, and weigh again"),
    "+": ("reports overload",
          "remove the load; the stone is above capacity (or zero range exceeded)"),
    "-": ("reports underload",
          "zero the balance / put the pan back"),
    "L": ("rejected a parameter", "report this; the driver sent a bad parameter"),
}
_RESYNC_ROUNDS = 2
_MAX_STRAY = 3


class MtSicsBalance(LineSession):
    def __init__(
        self,
        link: SerialLink,
        *,
        expected_serial: str | None = None,
        serial_setting: str = "the expected serial number in the config",
        reply_timeout: float = 2.0,
        stable_timeout: float = 10.0,
    ) -> None:
        self.link = link
        self.expected_serial = expected_serial
        self.serial_setting = serial_setting
        self.reply_timeout = reply_timeout
        self.stable_timeout = stable_timeout
        self.identity: Identity | None = None
        # Set after a timeout or failed recovery: a late reply may still be in
        # flight, so the next command starts with a resync.
        self._dirty = False

    # -- session (connect, reconnect, close: drivers/identify.py) -----------

    def _identify(self) -> Identity:
        self.resync()
        model, raw2 = self._info("I2")
        serial, raw4 = self._info("I4")
        return Identity(model=model, serial=serial, raw=raw2 + raw4)

    def resync(self) -> str:
        """Reset with ``@`` and read until its ``I4 A`` reply; returns the serial.

        Lines before it (a late reply, noise, the power-up ``I4 A``) are skipped.
        """
        for _ in range(_RESYNC_ROUNDS):
            self.link.discard_input()
            self.link.write_line("@")
            for _ in range(RESYNC_LINES):
                try:
                    reply = parse_line(self.link.read_line(self.reply_timeout))
                except ProtocolError:
                    continue
                except LinkError:
                    self._dirty = True
                    raise
                if isinstance(reply, InfoReply) and reply.command == "I4":
                    self._drain()
                    self._dirty = False
                    return reply.text
                if isinstance(reply, ErrorReply):
                    break  # '@' itself arrived garbled; send it again
        self._dirty = True
        raise ProtocolError(
            f"balance on {self.link.url} did not resynchronise: no I4 A reply to @",
            FIX_RESYNC,
            transcript=self.link.transcript(),
        )

    # -- commands ----------------------------------------------------------

    def weigh_now(self) -> Weight:
        return self._weigh("SI", self.reply_timeout)

    def weigh_stable(self) -> Weight:
        return self._weigh("S", self.stable_timeout)

    def zero(self) -> None:
        # Z waits for stability on the balance, like S.
        reply, raw = self._exchange("Z", self.stable_timeout)
        if isinstance(reply, StatusReply) and reply.command == "Z" and reply.status == "A":
            return
        self._reject("Z", reply, raw, expected="Z A")

    def tare(self) -> None:
        # T waits for stability and answers with the tare weight.
        reply, raw = self._exchange("T", self.stable_timeout)
        if isinstance(reply, WeightReply) and reply.command == "T":
            return
        self._reject("T", reply, raw, expected="T S <value> <unit>")

    def _weigh(self, cmd: str, timeout: float) -> Weight:
        reply, raw = self._exchange(cmd, timeout)
        if isinstance(reply, ForeignUnitReply):
            raise DeviceRefused(
                f"the balance is set to {reply.unit}; set it to g or ct",
                "change the weighing unit in the balance's menu (or send M21 0 0), then weigh again",
                self.link.transcript(),
            )
        if isinstance(reply, WeightReply) and reply.command in ("S", cmd):
            if cmd == "S" and not reply.stable:
                self._out_of_step(reply, raw, "a dynamic reading in answer to S")
            return Weight(reply.value_ug, reply.stable, reply.unit, raw)
        self._reject(cmd, reply, raw, expected="S S/D <value> <unit>")

    def _info(self, cmd: str) -> tuple[str, tuple[str, ...]]:
        reply, raw = self._exchange(cmd, self.reply_timeout)
        if isinstance(reply, InfoReply) and reply.command == cmd:
            return reply.text, raw
        self._reject(cmd, reply, raw, expected=f'{cmd} A "..."')

    def _exchange(self, cmd: str, timeout: float) -> tuple[Reply, tuple[str, ...]]:
        if self._dirty:
            self.resync()
        raw = [f"> {cmd}"]
        with self._recovering():
            self.link.write_line(cmd)
            for _ in range(_MAX_STRAY + 1):
                reply, shown = self._read_reply(parse_line, timeout)
                raw.append(shown)
                # An unasked I4 A is the balance's power-up line (or a late
                # answer to @); it is never the answer to another command.
                if isinstance(reply, InfoReply) and reply.command == "I4" and cmd != "I4":
                    continue
                return reply, tuple(raw)
            raise ProtocolError(
                f"balance on {self.link.url} keeps sending unsolicited I4 A lines",
                FIX_RESYNC,
                transcript=self.link.transcript(),
            )

    def _out_of_step(self, reply: Reply, raw: tuple[str, ...], why: str):
        err = ProtocolError(
            f"balance on {self.link.url} is out of step: {why} ({reply.raw!r})",
            FIX_RESYNC,
            transcript=self.link.transcript(),
        )
        self._recover()
        raise err

    def _reject(self, cmd: str, reply: Reply, raw: tuple[str, ...], *, expected: str):
        transcript = self.link.transcript()
        if isinstance(reply, ErrorReply):
            raise DeviceRefused(
                f"balance answered {cmd} with a {_ERRORS[reply.code]}", FIX_FRAMING, transcript
            )
        if (
            isinstance(reply, StatusReply)
            and reply.command in (cmd, "S")
            and reply.status in _STATUS
        ):
            what, fix = _STATUS[reply.status]
            raise DeviceRefused(f"balance {what} ({reply.raw})", fix, transcript)
        self._out_of_step(reply, raw, f"expected {expected}")
