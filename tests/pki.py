"""The tests' certificate authority: station.app.demo_pki's CA (the one `station
demo` uses), named "test-ca" and dated from one fixed ``NOW`` per test run so that
tests can place certificates before, around and after it."""

from __future__ import annotations

from pathlib import Path

from station.app.demo_pki import CA as _CA
from station.app.demo_pki import DAY, Issued, utc_now

__all__ = ["CA", "DAY", "NOW", "Issued"]

NOW = utc_now()


class CA(_CA):
    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        super().__init__(directory, name, now=NOW)
