"""Build device objects from config and turn driver results into readings.

This is the seam between drivers (protocol objects) and the cycle (readings):
the cycle sees only ``MassReading`` and ``DeviceError``.
"""

from __future__ import annotations

import time

from drivers.kinds import Identity, Weight
from drivers.mtsics import MtSicsBalance
from drivers.serial_link import SerialLink
from station.config import BalanceConfig
from station.errors import DeviceError
from station.instruments.reading import DeviceIdentity, MassReading
from station.instruments.seam import device_call
from station.records.payload import utc_now


class BalanceDevice:
    """A balance as the cycle sees it. Reconnects with backoff after a link loss."""

    def __init__(self, cfg: BalanceConfig, *, name: str = "balance", retry_s: float = 1.0) -> None:
        self.cfg = cfg
        self.name = name
        self.retry_s = retry_s
        link = SerialLink(
            cfg.port,
            baudrate=cfg.baudrate,
            bytesize=cfg.bytesize,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            xonxoff=cfg.xonxoff,
            timeout=cfg.reply_timeout_s,
            setting=f"devices.{name}.port in the config",
        )
        self.driver = MtSicsBalance(link, expected_serial=cfg.serial, reply_timeout=cfg.reply_timeout_s,
                                    serial_setting=f"devices.{name}.serial in the config")
        self.identity: DeviceIdentity | None = None
        self._next_attempt = 0.0
        self._last_error: DeviceError | None = None

    def connect(self) -> DeviceIdentity:
        with device_call(self.name):
            self.identity = self._identity(self.driver.connect())
        return self.identity

    def recover(self) -> None:
        """Reconnect and re-identify by serial number; at most one attempt per ``retry_s``."""
        now = time.monotonic()
        if now < self._next_attempt and self._last_error is not None:
            raise self._last_error
        self._next_attempt = now + self.retry_s
        try:
            with device_call(self.name):
                ident = self.driver.reconnect() if self.identity else self.driver.connect()
        except DeviceError as exc:
            self._last_error = exc
            raise
        self.identity = self._identity(ident)
        self._last_error = None

    def weigh_now(self) -> MassReading:
        with device_call(self.name):
            return self._reading(self.driver.weigh_now())

    def weigh_stable(self) -> MassReading:
        with device_call(self.name):
            return self._reading(self.driver.weigh_stable())

    def zero(self) -> None:
        with device_call(self.name):
            self.driver.zero()

    def close(self) -> None:
        self.driver.close()

    @staticmethod
    def _identity(ident: Identity) -> DeviceIdentity:
        return DeviceIdentity(model=ident.model, serial=ident.serial, raw=tuple(ident.raw))

    def _reading(self, w: Weight) -> MassReading:
        assert self.identity is not None, "connect() first"
        return MassReading(
            device=self.name,
            driver=self.cfg.driver,
            identity=self.identity,
            value_ug=w.value_ug,
            stable=w.stable,
            raw=tuple(w.raw),
            time=utc_now(),
        )
