"""A private PostgreSQL server for the tests and the bench: its own data directory, a free port
on 127.0.0.1, stopped by the PID it started. The machine's own PostgreSQL (5432)
is never touched. PostgreSQL refuses to run as root, so as root the server runs
as the `postgres` user (the Debian package creates it)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from station.app.broker import free_port
from station.errors import StationError


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise StationError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)",
                           "run `make system-deps`, or sudo apt-get install postgresql")
    return Path(found[-1]).parent


class Postgres:
    """``Postgres().start()``; ``fsync=False`` only where durability is not measured (tests)."""

    def __init__(self, *, fsync: bool = False) -> None:
        self.fsync = fsync
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="station-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)
        self.pid: int | None = None

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True, cwd=self.root)

    def start(self) -> Postgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self.start_server()

    def start_server(self) -> Postgres:
        """(Re)starts the server on the same data directory and port."""
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.fsync:
            opts += " -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)

    def stop_server(self) -> None:
        """Stops the server (fast shutdown: open sessions are cut) and keeps its data."""
        if self.pid is not None:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=30)
            except subprocess.SubprocessError:
                os.kill(self.pid, signal.SIGKILL)  # only the postmaster we started
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.05)
            self.pid = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
