"""One thread per instrument.

Every call into a driver runs on its instrument's own thread, and the caller
waits with a deadline. A slow or hung instrument therefore costs the stone in
progress, never the watchdog ping, the publisher, or the other instruments.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

from station.errors import DeviceError

T = TypeVar("T")


class DeviceWorker:
    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"device-{name}")
        self._stuck: Future | None = None  # a call that overran its deadline and still runs

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        if self._stuck is not None and not self._stuck.done():
            raise DeviceError(
                f"{self.name} is still busy with a command that did not finish in time",
                f"check {self.name}'s cable and power; the station retries when it answers again",
                device=self.name,
            )
        self._stuck = None
        future = self._pool.submit(fn)
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._stuck = future
            raise DeviceError(
                f"{self.name} did not answer within {timeout:g} s",
                f"check {self.name}'s cable and power; the stone in progress was not recorded",
                device=self.name,
            ) from None

    def close(self) -> None:
        # A hung driver call must not hold up shutdown: the thread is left to the OS.
        self._pool.shutdown(wait=False, cancel_futures=True)
