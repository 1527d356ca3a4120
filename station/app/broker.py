"""A private mosquitto for the demo, the tests and the bench.

Each instance owns its config, log and persistence files in one directory and
listens on 127.0.0.1 only. With ``tls`` it runs the production configuration
shipped in config/mosquitto/ (mutual TLS, identity = certificate CN, the ACL).
It never touches a system-wide broker: it is stopped by the PID it started,
never by name.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Self

from station.errors import StationError

HOST = "127.0.0.1"
_FIX_INSTALL = "install it: sudo apt-get install mosquitto"
SHIPPED = Path(__file__).resolve().parents[2] / "config" / "mosquitto"


@dataclass(frozen=True)
class BrokerTls:
    """The broker's side of mutual TLS: the CA that signs every client, and the
    broker's own certificate and key (PEM files)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def shipped(name: str) -> str:
    path = SHIPPED / name
    try:
        return path.read_text()
    except OSError as exc:
        raise StationError(f"cannot read the shipped broker file {path}: {exc}",
                           "run from a source checkout of the station (config/mosquitto/)") from exc


def find_mosquitto() -> str:
    """Path of the mosquitto binary; Debian puts it in /usr/sbin, often not in PATH."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise StationError("mosquitto is not installed (not in PATH nor /usr/sbin)", _FIX_INSTALL)
    return found


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """``with Mosquitto(tmp) as broker: ... broker.port``"""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        acl: str | None = None,
        tls: BrokerTls | None = None,
    ) -> None:
        """``acl`` is the ACL file's text; with ``tls`` and no ``acl`` the shipped ACL is used."""
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="station-mosquitto-")
            workdir = Path(self._own_tmp.name)
        self.workdir = Path(workdir)
        self.host = HOST
        self._fixed_port = port
        self.port: int = port or 0
        self.acl = acl
        self.tls = tls
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def conf_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_conf(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        persist = self.workdir / "persist"
        persist.mkdir(exist_ok=True)
        if self.tls is not None:
            self._write_tls_conf(persist)
            return
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            # Nagle turns every ack round trip into 40-90 ms.
            "set_tcp_nodelay true",
            # Without persistence a restart loses sessions and their queued messages.
            "persistence true",
            f"persistence_location {persist}/",
            # The default of 1000 drops messages silently for a slow or offline subscriber.
            "max_queued_messages 100000",
            "max_queued_bytes 0",
        ]
        lines += self._local_lines()
        if self.acl is not None:
            lines.append(f"acl_file {self._write_acl(self.acl)}")
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _local_lines(self) -> list[str]:
        """What a private test broker adds to any config: its own log file and user."""
        lines = [
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %H:%M:%S",
        ]
        if os.geteuid() == 0:
            # As root mosquitto switches to user "mosquitto", which cannot write our files.
            lines.append(f"user {pwd.getpwuid(0).pw_name}")
        return lines

    def _write_acl(self, text: str) -> Path:
        acl_path = self.workdir / "acl"
        acl_path.write_text(text.rstrip("\n") + "\n")
        return acl_path

    def _write_tls_conf(self, persist: Path) -> None:
        assert self.tls is not None
        conf = Template(shipped("mosquitto.conf.template")).substitute(
            port=self.port,
            bind_address=self.host,
            ca_file=self.tls.ca_file,
            cert_file=self.tls.cert_file,
            key_file=self.tls.key_file,
            acl_file=self._write_acl(self.acl if self.acl is not None else shipped("acl")),
            persistence_dir=persist,
        )
        self.conf_path.write_text(conf + "\n# private test broker\n" + "\n".join(self._local_lines()) + "\n")

    def log_tail(self, n: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 10.0) -> Self:
        if self._proc is not None:
            return self
        binary = find_mosquitto()
        # A port picked now may be taken before mosquitto binds it; retry with a new one.
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self.port or (attempt and not self._fixed_port):
                self.port = free_port(self.host)
            self._write_conf()
            self._proc = subprocess.Popen(
                [binary, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal must not race our own stop()
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if _port_open(self.host, self.port):
                    return self
                time.sleep(0.02)
            code = self._proc.poll()
            if code is None:  # running but never listening: give up on it
                self._kill()
            self._proc = None
            if attempt + 1 == attempts:
                raise StationError(
                    f"mosquitto did not start on {self.host}:{self.port} "
                    f"(exit code {code}); log: {self.log_tail()}",
                    f"check {self.conf_path} and the log above",
                )
        return self  # pragma: no cover

    def _kill(self) -> None:
        assert self._proc is not None
        try:
            self._proc.kill()
        except ProcessLookupError:
            pass
        self._proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM lets mosquitto write its persistence file; SIGKILL only if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """Crash the broker (no persistence save), for tests of the worst case."""
        if self._proc is not None:
            self._kill()
            self._proc = None

    def restart(self) -> None:
        self._fixed_port = self.port  # clients are configured with this port
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
