"""A TCP proxy for partition tests: put it between a client and its server, then
``blackhole()`` it as a pulled cable would. Nothing is forwarded either way, and
neither end is told: no FIN, no RST, the sockets stay open. Bytes sent meanwhile
wait (as TCP retransmissions would) and arrive after ``heal()``, in order; a
close made during the blackhole is passed on only after it, too.

New connections are accepted during a blackhole (the kernel completes the
handshake anyway), but nothing they send reaches the server until ``heal()``.
"""

from __future__ import annotations

import select
import socket
import threading

_CHUNK = 65536
_TICK = 0.1  # how often idle pumps look at close()


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_TICK)
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()  # set: forwarding; clear: blackholed
        self._open.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.connections = 0  # accepted so far
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    def blackhole(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self._open.set()  # release pumps holding data
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> "BlackholeProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # the server is down: a refused connection, as without the proxy
                continue
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)  # sends block; reads wait in select() with a tick
            with self._lock:
                self._sockets += [client, server]
                self.connections += 1
            for src, dst, name in ((client, server, "up"), (server, client, "down")):
                t = threading.Thread(target=self._pump, args=(src, dst), name=f"proxy-{name}", daemon=True)
                self._threads.append(t)
                t.start()

    def _hold(self) -> bool:
        """Wait out a blackhole; False once the proxy is closed."""
        while not self._open.wait(_TICK):
            pass
        return not self._closed.is_set()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while self._hold():
            try:
                if not select.select([src], [], [], _TICK)[0]:
                    continue
                data = src.recv(_CHUNK)
            except (OSError, ValueError):
                data = b""  # reset, or closed by close(): treated as a close
            # Read before the blackhole began or during it: held until it heals.
            if not self._hold():
                return
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                src.close(), dst.close()
                return
