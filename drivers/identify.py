"""Proving which device answers, and the session around it, for the serial drivers.

Every driver refuses a device whose serial number is not the one expected:
the configured one, or else the one that answered the first connect (so an
unplug/replug that brings a different balance back is caught). The wording
of that refusal is shared here so every instrument says it the same way.

``LineSession`` is the connect / reconnect / close lifecycle of the balances
on a :class:`~drivers.serial_link.SerialLink` (MT-SICS, Sartorius SBI): each
supplies ``_identify()`` (resync, then read model and serial) and
``resync()``; the protocol itself stays in the driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from drivers.errors import LinkError, ProtocolError, ReplyTimeout
from drivers.kinds import Identity

RESYNC_LINES = 8  # lines read (or drained) per resync round before giving up on it
QUIET_S = 0.05  # a balance answers within ms; this long of silence means "nothing more"


def expected_serial(driver: Any) -> str | None:
    """The serial the device must have: configured, or else the first one seen."""
    return driver.expected_serial or (driver.identity.serial if driver.identity else None)


def check_serial(driver: Any, serial: str, *, device: str, plug: str | None = None,
                 where: str = "") -> None:
    """Raise ``LinkError`` if ``serial`` is not the one ``driver`` expects.

    ``driver`` has ``link``, ``expected_serial``, ``identity`` and
    ``serial_setting`` (the config key the fix names). ``where`` narrows the
    place on the link (``" at unit 3"`` on a bus); ``plug`` is what the user
    plugs in, when it is not called ``device``.
    """
    want = expected_serial(driver)
    if want is not None and serial != want:
        raise LinkError(
            f"a different {device} (serial {serial}) answers{where} on {driver.link.url}; "
            f"expected {want}",
            f"plug the right {plug or device} in, or update {driver.serial_setting}",
            transcript=driver.link.transcript(),
        )


class LineSession:
    """connect / identify / recover / reconnect / close for a balance on a SerialLink.

    Subclasses set ``link``, ``expected_serial``, ``serial_setting``,
    ``identity`` (None until the first connect) and ``_dirty``, and implement
    ``_identify()`` and ``resync()``.
    """

    device = "balance"
    link: Any
    identity: Identity | None
    _dirty: bool

    @property
    def _checks_serial(self) -> bool:
        return True

    def connect(self) -> Identity:
        self.link.open()
        try:
            ident = self._identify()
            if self._checks_serial:
                check_serial(self, ident.serial, device=self.device)
        except BaseException:
            self.link.close()
            raise
        if self.identity is None:
            self.identity = ident
        return ident

    def identify(self) -> Identity:
        return self.connect()

    def recover(self) -> Identity:
        return self.reconnect()

    def reconnect(self) -> Identity:
        """Reopen the same URL and prove it is the same device as before."""
        self.link.close()
        return self.connect()

    def close(self) -> None:
        self.link.close()

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _identify(self) -> Identity:
        raise NotImplementedError

    def resync(self) -> object:
        raise NotImplementedError

    def _drain(self) -> None:
        """Swallow lines still arriving after a resync until the line is quiet.

        A late reply (or, on MT-SICS, the power-up ``I4 A`` that looks exactly
        like the answer to ``@``) would otherwise be taken for the reply to
        the next command.
        """
        for _ in range(RESYNC_LINES):
            try:
                self.link.read_line(QUIET_S)
            except ProtocolError:
                continue
            except ReplyTimeout:
                return

    def _read_reply(self, parse: Callable[[bytes], Any], timeout: float) -> tuple[Any, str]:
        """One line, parsed by the protocol's ``parse``, and its ``< ...`` transcript
        line. A line that does not parse raises ``ProtocolError`` with the link's
        transcript."""
        line = self.link.read_line(timeout)
        try:
            reply = parse(line)
        except ProtocolError as e:
            raise ProtocolError(e.what, e.fix, transcript=self.link.transcript()) from None
        return reply, f"< {line.decode('ascii')}"  # parse vouched for ASCII

    @contextmanager
    def _recovering(self) -> Iterator[None]:
        """Around one exchange: bytes we cannot trust resync the line at once
        (the exchange's own error is still the one raised); a link error leaves
        the line dirty, so the next command resyncs first."""
        try:
            yield
        except ProtocolError:
            self._recover()
            raise
        except LinkError:
            self._dirty = True
            raise

    def _recover(self) -> None:
        try:
            self.resync()
        except (LinkError, ProtocolError):
            self._dirty = True  # the caller's error is the one to report
