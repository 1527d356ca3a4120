"""Fault switches of the line simulators (MT-SICS, SBI, serial spectrometer).

The control port sets them from any thread; the SimPort service thread reads
them while answering. Two kinds:

* one-shot faults (``garbage``, ``partial``, and what a device adds, e.g. the
  spectrometer's ``corrupt`` and ``nak``): the next reply is broken, once;
  how ``partial`` cuts a reply is the device's own business;
* ``timeout S``: the device ignores every command for S seconds.

Garbage is drawn from a seeded RNG, so a failing test replays the same bytes.
"""

from __future__ import annotations

import random
import threading
import time

# What a 7-bit UART can carry that never forms a line: control characters but CR and LF.
_CONTROL_BYTES = [b for b in range(1, 0x20) if b not in (0x0A, 0x0D)]


class LineFaults:
    def __init__(self, kinds: tuple[str, ...] = ("garbage", "partial"), *, seed: int | None = None,
                 usage: str | None = None) -> None:
        self.kinds = kinds
        self._usage = usage or f"{', '.join(kinds)} or timeout"
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._next: str | None = None
        self._mute_until = 0.0

    # -- control port (any thread) ----------------------------------------------

    def inject(self, kind: str, seconds: float | None = None) -> None:
        with self._lock:
            if kind in self.kinds:
                self._next = kind
            elif kind == "timeout":
                if seconds is None or seconds < 0:
                    raise ValueError("fault timeout needs a duration in seconds")
                self._mute_until = time.monotonic() + seconds
            else:
                raise ValueError(f"unknown fault {kind!r}; use {self._usage}")

    def clear(self) -> None:
        with self._lock:
            self._next, self._mute_until = None, 0.0

    # -- service thread -----------------------------------------------------------

    def take(self) -> str | None:
        """The pending one-shot fault, if any; it fires once."""
        with self._lock:
            fault, self._next = self._next, None
        return fault

    @property
    def muted(self) -> bool:
        with self._lock:
            return time.monotonic() < self._mute_until

    def garbage(self, *, seven_bit: bool = False) -> bytes:
        """4 to 16 bytes that never form a valid line and never contain CR LF:
        bytes >= 0x80, or control characters on a 7-bit line."""
        n = self._rng.randint(4, 16)
        if seven_bit:
            return bytes(self._rng.choice(_CONTROL_BYTES) for _ in range(n))
        return bytes(self._rng.randrange(0x80, 0x100) for _ in range(n))
