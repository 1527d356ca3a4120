"""The one place where driver errors become station errors.

``drivers/`` never imports ``station/``; every call from the station into a
driver goes through :func:`device_call`, so the rest of the station only ever
sees ``DeviceError`` (link or protocol trouble: reconnect) and
``DeviceRefusal`` (the instrument said no: abort the stone, no reconnect).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from drivers.errors import DeviceRefused, DriverError
from station.errors import DeviceError, DeviceRefusal


def translate(exc: DriverError, device: str) -> DeviceError:
    cls = DeviceRefusal if isinstance(exc, DeviceRefused) else DeviceError
    return cls(exc.what, exc.fix, exc.transcript, device=device)


@contextmanager
def device_call(device: str) -> Iterator[None]:
    try:
        yield
    except DriverError as exc:
        raise translate(exc, device) from exc
