"""The device side of a simulated serial device: a pty (or TCP listener) it sits on.

A ``SimPort`` knows nothing about any protocol. It owns the endpoint a driver
opens (a pty, optionally behind a ``/dev/serial/by-id`` style symlink, or a TCP
listener), can be unplugged and replugged, and hands every complete received
line to the device's ``on_line`` callback.

One service thread owns the transport: every read, write, unplug and replug
happens on it, so closing a descriptor can never race a ``select`` on it.
``on_line`` and ``on_plug`` run on that thread, and only they may call
:meth:`write` and :meth:`idle`. Other threads use :meth:`unplug` and
:meth:`replug`, which post the work to the service thread and wait for it.
"""

from __future__ import annotations

import os
import queue
import select
import socket
import threading
import time
import tty
from collections.abc import Callable

_STOP_WAIT_S = 5.0
_WRITE_WAIT_S = 2.0


class SimPort:
    """Device end of a pty or TCP link with unplug/replug and a service thread.

    ``on_line`` gets each received line without its terminator (LF, with an
    optional CR before it). ``on_plug`` runs after every plug, i.e. on
    :meth:`start` and :meth:`replug`, so a device can announce itself the way
    real ones do at power-up; on TCP nobody is connected yet and it goes nowhere.
    """

    def __init__(
        self,
        on_line: Callable[[bytes], None] | None = None,
        *,
        on_bytes: Callable[[bytes], None] | None = None,
        on_plug: Callable[[], None] | None = None,
        link_path: str | None = None,
        tcp: tuple[str, int] | None = None,
        max_line: int = 1024,
        name: str = "sim-port",
    ) -> None:
        if (on_line is None) == (on_bytes is None):
            raise ValueError("give exactly one of on_line (line protocols) or on_bytes (binary protocols)")
        # Binary protocols (Modbus RTU, ESC commands without a terminator) get
        # every chunk as it arrives and do their own framing.
        self._on_line, self._on_bytes, self._on_plug = on_line, on_bytes, on_plug
        self.link_path, self._tcp_addr = link_path, tcp
        self._max_line, self._name = max_line, name
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._gen = 0  # bumped whenever the peer changes; lets idle() abort
        self._inbuf = bytearray()
        self._actions: queue.Queue[Callable[[], None]] = queue.Queue()
        self._wake_r, self._wake_w = os.pipe()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle (any thread) ------------------------------------------------

    @property
    def path(self) -> str:
        """What a driver opens: the symlink, the pty, or ``socket://host:port``."""
        if self._tcp_addr is not None:
            host, port = self._tcp_addr[:2]
            return f"socket://{host}:{port}"
        return self.link_path or self._slave_path or ""

    @property
    def plugged(self) -> bool:
        return self._master is not None or self._listener is not None

    def start(self) -> SimPort:
        self._plug()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
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

    def unplug(self) -> None:
        self._call(self._unplug)

    def replug(self) -> None:
        def power_cycle() -> None:
            self._unplug()
            self._plug()

        self._call(power_cycle)

    # -- for the device (service thread) ---------------------------------------

    @property
    def tty_fd(self) -> int | None:
        """The pty's slave end (None on TCP or unplugged). Its termios is what a
        client set when it opened the port, so a device can check the framing."""
        return self._slave

    def write(self, data: bytes) -> None:
        try:
            if self._master is not None:
                self._write_pty(memoryview(data))
            elif self._client is not None:
                self._client.sendall(data)
        except OSError:
            self._drop_client()

    def _write_pty(self, data: memoryview) -> None:
        # The pty buffer holds a few kB: a spectrum block takes several
        # writes while the driver drains it.
        deadline = time.monotonic() + _WRITE_WAIT_S
        while data:
            try:
                data = data[os.write(self._master, data):]
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return  # nobody reading and the buffer is full: a real UART drops it too
                select.select([], [self._master], [], 0.05)

    def idle(self, seconds: float) -> bool:
        """Keep the link serviced for up to ``seconds`` while a command waits.

        Returns False when the waiting command should be dropped: the port is
        stopping, the peer changed, or another complete line has arrived (real
        devices abandon a pending command when a new one comes in).
        """
        gen = self._gen
        self._pump(seconds)
        pending = bool(self._inbuf) if self._on_bytes is not None else b"\n" in self._inbuf
        return not (self._stopping.is_set() or self._gen != gen or pending)

    # -- transport ----------------------------------------------------------------

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
        if self._on_plug is not None:
            self._on_plug()

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
            if len(self._inbuf) > self._max_line:  # line noise, not a command
                self._inbuf.clear()
            return None
        line = bytes(self._inbuf[:idx]).rstrip(b"\r")
        del self._inbuf[: idx + 1]
        return line

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._pump(0.1)
            if self._on_bytes is not None:
                if self._inbuf and not self._stopping.is_set():
                    chunk = bytes(self._inbuf)
                    self._inbuf.clear()
                    self._on_bytes(chunk)
                continue
            assert self._on_line is not None
            while not self._stopping.is_set() and (line := self._take_line()) is not None:
                self._on_line(line)
