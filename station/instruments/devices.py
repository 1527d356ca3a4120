"""Instruments as the station sees them: a driver from the registry, run on
its own worker thread, its errors translated at the seam, its results turned
into readings. The stone session sees these, never a driver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from drivers.kinds import Identity, Weight
from station.errors import DeviceError
from station.instruments.plugins.base import DeviceConfig
from station.instruments.reading import AmbientStatus, DeviceIdentity, Reading, mass_reading, utc_now
from station.instruments.registry import plugin_for
from station.instruments.seam import device_call
from station.instruments.worker import DeviceWorker

T = TypeVar("T")
# Commands that wait for the instrument itself (S, Z, T wait for stability).
_SLOW_CALL_S = 20.0


class Instrument:
    """Connect, reconnect with backoff and re-identification, close."""

    def __init__(self, name: str, cfg: DeviceConfig, driver: Any, *, retry_s: float = 1.0) -> None:
        self.name, self.cfg, self.driver = name, cfg, driver
        self.kind, self.driver_name = cfg.kind, cfg.driver
        self.retry_s = retry_s
        self.identity: DeviceIdentity | None = None
        self.worker = DeviceWorker(name)
        self._next_attempt = 0.0
        self._last_error: DeviceError | None = None

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        def guarded() -> T:
            with device_call(self.name):
                return fn()

        return self.worker.call(guarded, timeout if timeout is not None else self.cfg.reply_timeout_s * 3)

    def connect(self) -> DeviceIdentity:
        self.identity = _identity(self.call(self.driver.identify, _SLOW_CALL_S))
        self._last_error = None
        return self.identity

    def recover(self) -> DeviceIdentity:
        """Reconnect and re-identify by serial number; at most one attempt per ``retry_s``."""
        now = time.monotonic()
        if now < self._next_attempt and self._last_error is not None:
            raise self._last_error
        self._next_attempt = now + self.retry_s
        try:
            ident = self.call(self.driver.recover if self.identity else self.driver.identify, _SLOW_CALL_S)
        except DeviceError as exc:
            self._last_error = exc
            raise
        self.identity = _identity(ident)
        self._last_error = None
        return self.identity

    def close(self) -> None:
        try:
            self.call(self.driver.close, 5.0)
        except DeviceError:
            pass  # closing a dead link must not mask why we stopped
        self.worker.close()


class ScaleDevice(Instrument):
    def weigh_now(self) -> Reading:
        return self._reading(self.call(self.driver.weigh_now))

    def weigh_stable(self) -> Reading:
        return self._reading(self.call(self.driver.weigh_stable, _SLOW_CALL_S))

    def zero(self) -> None:
        self.call(self.driver.zero, _SLOW_CALL_S)

    def tare(self) -> None:
        self.call(self.driver.tare, _SLOW_CALL_S)

    def _reading(self, w: Weight) -> Reading:
        assert self.identity is not None, "connect() first"
        return mass_reading(self.name, self.driver_name, self.identity, w.value_ug, w.stable, tuple(w.raw), utc_now())


class AmbientDevice(Instrument):
    """Read at every stone. A failed read falls back to the last good sample
    while it is younger than ``max_age_s`` (status "stale"), then "missing"."""

    def __init__(self, name: str, cfg: Any, driver: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name, cfg, driver)
        self.required: bool = cfg.required
        self.max_age_s: float = cfg.max_age_s
        self.clock = clock
        self._last: tuple[float, AmbientStatus] | None = None

    def sample(self) -> AmbientStatus:
        try:
            if self.identity is None:
                self.recover()
            s = self.call(self.driver.read)
        except DeviceError as exc:
            return self._fallback(exc)
        good = AmbientStatus("ok", "", s.temperature_dc, s.humidity_dpct, self.name, self.identity, utc_now(), tuple(s.raw))
        self._last = (self.clock(), good)
        return good

    def _fallback(self, exc: DeviceError) -> AmbientStatus:
        if self._last is not None:
            age = self.clock() - self._last[0]
            if age <= self.max_age_s:
                prev = self._last[1]
                return AmbientStatus("stale", f"ambient sensor {self.name}: {exc.what}; using the reading from "
                                     f"{age:.0f} s ago", prev.temperature_dc, prev.humidity_dpct, self.name,
                                     prev.identity, prev.time, prev.raw)
        try:
            self.call(self.driver.close, 5.0)
        except DeviceError:
            pass
        self.identity = None  # re-identify on the next stone
        return AmbientStatus("missing", f"ambient sensor {self.name}: {exc}", device=self.name)


def _identity(ident: Identity) -> DeviceIdentity:
    return DeviceIdentity(model=ident.model, serial=ident.serial, raw=tuple(ident.raw))


_ADAPTERS: dict[str, type[Instrument]] = {"scale": ScaleDevice, "ambient": AmbientDevice}


def open_instrument(name: str, cfg: DeviceConfig) -> Instrument:
    """Build the driver (no I/O yet) and wrap it for the station."""
    plugin = plugin_for(cfg.driver)
    adapter = _ADAPTERS.get(plugin.kind, Instrument)
    with device_call(name):  # e.g. two devices on one bus with different settings
        driver = plugin.build(name, cfg)
    return adapter(name, cfg, driver)
