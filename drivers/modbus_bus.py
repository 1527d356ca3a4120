"""What a Modbus bus is, apart from pymodbus: its URL and the one-link-per-bus registry.

Kept out of ``drivers/modbus_link.py`` (the pymodbus boundary) because none of
it touches pymodbus. URLs: a serial device or pty path
(``/dev/serial/by-id/...``) is RTU, ``socket://host:port`` is RTU frames over
TCP (a serial server), ``tcp://host:port`` is Modbus TCP.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from drivers.errors import LinkError

__all__ = ["parse_url", "bus_settings", "LinkRegistry"]

L = TypeVar("L")


def parse_url(url: str) -> tuple[str, str, int]:
    """(kind, host-or-path, port): kind is "tcp", "rtu-socket" or "rtu"."""
    for prefix, kind in (("tcp://", "tcp"), ("socket://", "rtu-socket")):
        if url.startswith(prefix):
            host, sep, port = url[len(prefix):].rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected {prefix}HOST:PORT, got {url!r}")
            return kind, host, int(port)
    if "://" in url or not url:
        raise ValueError(f"unsupported Modbus port {url!r}")
    return "rtu", url, 0


def bus_settings(settings: dict | None) -> dict:
    """The settings every device on a bus must agree on (not the hint text)."""
    return {k: v for k, v in (settings or {}).items() if k not in ("setting", "history")}


class LinkRegistry(Generic[L]):
    """One link object per bus URL, so devices on one RS-485 bus take turns.

    A link leaves the registry when its last user closes it (the next user may
    choose other settings) and comes back when it is opened again.
    """

    def __init__(self) -> None:
        self._links: dict[str, L] = {}
        self._settings: dict[str, dict] = {}
        self._lock = threading.Lock()

    def get(self, url: str, settings: dict, make: Callable[[], L]) -> L:
        with self._lock:
            link = self._links.get(url)
            if link is None:
                link = self._links[url] = make()
                self._settings[url] = settings
                return link
            mine, theirs = bus_settings(settings), bus_settings(self._settings.get(url))
            if mine and mine != theirs:
                raise LinkError(
                    f"two devices on {url} ask for different bus settings ({theirs} and {mine})",
                    "devices on one RS-485 bus share its baud rate, parity, timeout and gap: "
                    "give them the same settings",
                )
            return link

    def back(self, url: str, link: L, settings: dict) -> None:
        """A link handed out before is opened again: it is the bus's link again."""
        with self._lock:
            if self._links.setdefault(url, link) is link:
                self._settings[url] = settings

    def forget(self, url: str, link: L) -> None:
        with self._lock:
            if self._links.get(url) is link:
                del self._links[url]
                del self._settings[url]
