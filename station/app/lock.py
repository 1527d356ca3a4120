"""One station per state dir: an exclusive lock, held for the life of `station run`.

Two instances on one config would fight over the serial port, the MQTT
client ID and the chain's next seq; the second one refuses at once instead.
The kernel drops the lock when the process dies, so a crash leaves no stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from station.errors import StationError

LOCK_FILE = "station.lock"


class StateDirLock:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StationError(f"cannot create the lock file {self.path}: {exc.strerror or exc}",
                               f"make {self.path.parent} writable by the station user") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StationError(
                f"another station is already running on {self.path.parent} (pid {holder})",
                "stop it first (systemctl stop station, or Ctrl-C in its terminal); "
                "give each station its own station.state_dir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
