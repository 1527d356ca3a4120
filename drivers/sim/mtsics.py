"""An MT-SICS balance on a pty (or TCP) with settling physics and fault switches.

One service thread owns the transport: every read, write, unplug and replug
happens on it, so closing a descriptor can never race a ``select`` on it.
Other threads (tests, the control server) only change physics state under a
lock or post actions to that thread.
"""

from __future__ import annotations

import math
import os
import queue
import random
import select
import socket
import threading
import time
import tty
from decimal import Decimal
from typing import Callable

from drivers.sim import control

CAPACITY_UG = 220_000_000
_STOP_WAIT_S = 5.0


def round_to(value_ug: int, step_ug: int) -> int:
    q, rem = divmod(value_ug, step_ug)
    return (q + (2 * rem >= step_ug)) * step_ug


def format_value(value_ug: int, readability_ug: int = 100) -> str:
    """Grams, right-aligned in 10 chars, with as many decimals as the readability."""
    decimals = max(0, 6 - round(math.log10(readability_ug)))
    grams = Decimal(round_to(value_ug, readability_ug)).scaleb(-6)
    return format(grams.quantize(Decimal(1).scaleb(-decimals)), "f").rjust(10)


def weight_line(cmd: str, stable: bool, value_ug: int, readability_ug: int = 100) -> str:
    return f"{cmd} {'S' if stable else 'D'} {format_value(value_ug, readability_ug)} g"


class MtSicsSimulator:
    def __init__(
        self,
        *,
        model: str = "XS205DU Excellence 220.0090 g",
        serial: str = "SIM0000001",
        readability_ug: int = 100,
        settle_s: float = 0.5,
        noise_ug: int = 0,
        motion_noise_ug: int = 2000,
        drift_ug_per_s: float = 0,
        link_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        capacity_ug: int = CAPACITY_UG,
        stable_timeout_s: float = 3.0,
        seed: int | None = None,
    ) -> None:
        if readability_ug < 1 or 10 ** round(math.log10(readability_ug)) != readability_ug:
            raise ValueError("readability_ug must be a power of ten")
        self.model, self.serial = model, serial
        self.readability_ug, self.settle_s = readability_ug, settle_s
        self.motion_noise_ug, self.capacity_ug = motion_noise_ug, capacity_ug
        # How long S / Z wait for stability before answering "I", like the
        # balance's own stability timeout.
        self.stable_timeout_s = stable_timeout_s
        self.link_path, self._tcp_addr = link_path, tcp
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        now = time.monotonic()
        self._mass_ug, self._zero_ug, self._noise_ug = 0, 0, noise_ug
        self._changed = now - settle_s  # powered up long ago: stable
        self._drift_rate, self._drift_acc, self._drift_t0 = drift_ug_per_s, 0.0, now
        self._next_fault: str | None = None
        self._mute_until = 0.0
        # transport, owned by the service thread once it runs
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._gen = 0  # bumped whenever the peer changes; aborts a waiting S
        self._inbuf = bytearray()
        self._actions: queue.Queue[Callable[[], None]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._control: control.ControlServer | None = None

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> str:
        if self._tcp_addr is not None:
            host, port = self._tcp_addr[:2]
            return f"socket://{host}:{port}"
        return self.link_path or self._slave_path or ""

    @property
    def plugged(self) -> bool:
        return self._master is not None or self._listener is not None

    def start(self) -> MtSicsSimulator:
        self._plug()
        self._power_up_line()
        self._thread = threading.Thread(target=self._run, name="mtsics-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self.stop_control()
        self._stopping.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(_STOP_WAIT_S)
            self._thread = None
        self._unplug()
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> MtSicsSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- physics and fault switches (any thread) -----------------------------

    def place(self, mass_ug: int) -> None:
        """Put a load of ``mass_ug`` on the pan (negative: pan lifted)."""
        with self._lock:
            self._mass_ug = int(mass_ug)
            self._changed = time.monotonic()

    def remove(self) -> None:
        self.place(0)

    def set_noise(self, ug: int) -> None:
        with self._lock:
            self._noise_ug = int(ug)

    def set_drift(self, ug_per_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            self._drift_acc += self._drift_rate * (now - self._drift_t0)
            self._drift_rate, self._drift_t0 = float(ug_per_s), now

    def inject(self, kind: str, seconds: float | None = None) -> None:
        with self._lock:
            if kind in ("garbage", "partial"):
                self._next_fault = kind
            elif kind == "timeout":
                if seconds is None or seconds < 0:
                    raise ValueError("fault timeout needs a duration in seconds")
                self._mute_until = time.monotonic() + seconds
            else:
                raise ValueError(f"unknown fault {kind!r}; use garbage, partial or timeout")

    def clear_faults(self) -> None:
        with self._lock:
            self._next_fault, self._mute_until = None, 0.0

    def unplug(self) -> None:
        self._call(self._unplug)

    def replug(self) -> None:
        def power_cycle() -> None:
            self._unplug()
            self._plug()
            self._power_up_line()

        self._call(power_cycle)

    def reading(self) -> tuple[int, bool]:
        """The display right now: (net µg rounded to readability, stable)."""
        with self._lock:
            now = time.monotonic()
            stable = now - self._changed >= self.settle_s
            spread = self._noise_ug if stable else self.motion_noise_ug
            noise = self._rng.randint(-spread, spread) if spread > 0 else 0
            net = self._gross(now) - self._zero_ug + noise
            return round_to(net, self.readability_ug), stable

    def status(self) -> dict:
        value, stable = self.reading()
        with self._lock:
            return {
                "port": self.port,
                "mass_ug": self._mass_ug,
                "reading_ug": value,
                "stable": stable,
                "serial": self.serial,
                "plugged": self.plugged,
            }

    def _gross(self, now: float) -> int:
        return self._mass_ug + round(self._drift_acc + self._drift_rate * (now - self._drift_t0))

    def _range(self) -> str | None:
        with self._lock:
            gross = self._gross(time.monotonic())
        if gross > self.capacity_ug:
            return "+"
        if gross < -self.capacity_ug // 100:
            return "-"
        return None

    # -- transport (service thread) ---------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        thread = self._thread
        if thread is None or thread is threading.current_thread() or not thread.is_alive():
            fn()
            return
        done, box = threading.Event(), []

        def job() -> None:
            try:
                fn()
            except BaseException as e:  # hand it to the caller's thread
                box.append(e)
            finally:
                done.set()

        self._actions.put(job)
        os.write(self._wake_w, b"x")
        if not done.wait(_STOP_WAIT_S):
            raise RuntimeError("simulator thread did not respond")
        if box:
            raise box[0]

    def _plug(self) -> None:
        if self._tcp_addr is not None:
            lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            lst.bind(self._tcp_addr)
            lst.listen(1)
            lst.setblocking(False)
            self._tcp_addr = lst.getsockname()[:2]  # replug reuses the same port
            self._listener = lst
        else:
            master, slave = os.openpty()
            # Raw: no echo (our own replies would come back as commands) and
            # CR LF pass through unchanged for clients that do not set termios.
            tty.setraw(slave)
            os.set_blocking(master, False)
            # Holding the slave open keeps the master readable while clients
            # come and go.
            self._master, self._slave = master, slave
            self._slave_path = os.ttyname(slave)
            if self.link_path:
                tmp = f"{self.link_path}.{os.getpid()}.tmp"
                if os.path.lexists(tmp):
                    os.unlink(tmp)
                os.symlink(self._slave_path, tmp)
                os.replace(tmp, self.link_path)  # atomic, like udev
        self._gen += 1

    def _unplug(self) -> None:
        for sock in (self._client, self._listener):
            if sock is not None:
                sock.close()
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._client = self._listener = None
        self._master = self._slave = None
        if self.link_path and os.path.islink(self.link_path):
            os.unlink(self.link_path)  # udev removes the by-id link on unplug
        self._inbuf.clear()
        self._gen += 1

    def _power_up_line(self) -> None:
        self._write(f'I4 A "{self.serial}"\r\n'.encode())

    def _write(self, data: bytes) -> None:
        try:
            if self._master is not None:
                os.write(self._master, data)
            elif self._client is not None:
                self._client.sendall(data)
        except BlockingIOError:
            pass  # nobody reading and the buffer is full: a real UART drops it too
        except OSError:
            self._drop_client()

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._inbuf.clear()
            self._gen += 1

    def _pump(self, timeout: float) -> None:
        """One select round: run posted actions, accept clients, read bytes."""
        peer = self._master if self._master is not None else self._client
        rlist: list = [self._wake_r] + [x for x in (peer, self._listener) if x is not None]
        try:
            ready, _, _ = select.select(rlist, [], [], timeout)
        except (OSError, ValueError):
            ready = []
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)
        while True:
            try:
                self._actions.get_nowait()()
            except queue.Empty:
                break
        if self._listener is not None and self._listener in ready:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                conn = None
            if conn is not None:
                self._drop_client()  # one client at a time, newest wins
                conn.setblocking(True)
                conn.settimeout(2.0)
                self._client = conn
                self._gen += 1
        if peer is None or peer not in ready:
            return
        try:
            if isinstance(peer, int):
                if peer != self._master:
                    return  # unplugged by an action this round
                data = os.read(peer, 4096)
            else:
                if peer is not self._client:
                    return
                data = peer.recv(4096)
                if not data:
                    self._drop_client()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            if peer is self._client:
                self._drop_client()
            return
        self._inbuf += data

    def _take_line(self) -> bytes | None:
        idx = self._inbuf.find(b"\n")
        if idx < 0:
            if len(self._inbuf) > 1024:  # noise: a real balance would answer ES
                self._inbuf.clear()
            return None
        line = bytes(self._inbuf[:idx]).rstrip(b"\r")
        del self._inbuf[: idx + 1]
        return line

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._pump(0.1)
            while not self._stopping.is_set() and (line := self._take_line()) is not None:
                self._handle(line)

    # -- protocol ----------------------------------------------------------

    def _send(self, text: str) -> None:
        data = f"{text}\r\n".encode("ascii")
        with self._lock:
            fault, self._next_fault = self._next_fault, None
        if fault == "garbage":
            # Bytes >= 0x80 never form a valid line and never contain CR LF.
            n = self._rng.randint(4, 16)
            data = bytes(self._rng.randrange(0x80, 0x100) for _ in range(n)) + b"\r\n"
        elif fault == "partial":
            data = data[: max(1, len(text) // 2)]
        self._write(data)

    def _handle(self, line: bytes) -> None:
        cmd = line.decode("ascii", "replace").strip()
        with self._lock:
            muted = time.monotonic() < self._mute_until
        if muted or not cmd:
            return
        if cmd in ("@", "I4"):
            return self._send(f'I4 A "{self.serial}"')
        if cmd == "I2":
            return self._send(f'I2 A "{self.model}"')
        if cmd not in ("S", "SI", "Z"):
            return self._send("ES")
        out = self._range()
        settled = True if cmd == "SI" or out else self._wait_stable()
        if settled is None:
            return  # cancelled by the next command
        if out or not settled:
            return self._send(f"{cmd[0]} {out or 'I'}")
        if cmd == "Z":
            with self._lock:
                self._zero_ug = self._gross(time.monotonic())
            return self._send("Z A")
        value, stable = self.reading()
        self._send(weight_line("S", stable, value, self.readability_ug))

    def _wait_stable(self) -> bool | None:
        """True once settled, False at the stability timeout, None if cancelled.

        A real balance drops a pending S when a new command (e.g. ``@``)
        arrives; we do the same so a client's resync is answered at once.
        """
        deadline = time.monotonic() + self.stable_timeout_s
        gen = self._gen
        while True:
            with self._lock:
                if time.monotonic() - self._changed >= self.settle_s:
                    return True
            if time.monotonic() >= deadline:
                return False
            self._pump(0.02)
            if self._stopping.is_set() or self._gen != gen or b"\n" in self._inbuf:
                return None

    # -- control interface (drivers/sim/control.py) -----------------------

    def control(self, line: str) -> dict:
        """Run one control command (``place 99800``, ``fault timeout 2`` ...)."""
        return control.run_command(self, line)

    def start_control(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._control = control.ControlServer(self, host, port)
        return self._control.address

    def stop_control(self) -> None:
        server, self._control = self._control, None
        if server is not None:
            server.stop()
