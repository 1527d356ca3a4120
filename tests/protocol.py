"""A scripted device on a real pty, in the spirit of PyMeasure's ``expected_protocol``.

The driver under test opens ``peer.port`` like any serial port. A thread on the
master side reads exactly the bytes each step expects, fails the test on any
difference, and answers with the scripted reply bytes (which may be garbage,
a partial line, or nothing at all). Leaving the ``with`` block raises
``AssertionError`` if a request differed, a step was never reached, or the
driver sent bytes the script does not expect.

    with ExpectedProtocol([(b"S\\r\\n", b"S S      0.0998 g\\r\\n")]) as peer:
        ...driver on peer.port...

A step whose request is ``None`` sends its reply without waiting (a balance
speaking on its own, e.g. the power-up line).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

Step = tuple[bytes | None, bytes]


class ExpectedProtocol:
    def __init__(self, steps: list[Step], *, step_timeout: float = 3.0) -> None:
        self.steps = list(steps)
        self.step_timeout = step_timeout
        self.log: list[str] = []
        self.done = 0
        self.failure: str | None = None
        self.unfinished = "received nothing"
        self._stop = threading.Event()

    @property
    def port(self) -> str:
        return self._path

    def __enter__(self) -> ExpectedProtocol:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        self._thread.join(self.step_timeout + 2)
        extra = self._read_available()
        os.close(self._master)
        os.close(self._slave)
        problem = self.failure
        if problem is None and extra:
            problem = f"unexpected bytes from the driver after the script: {extra!r}"
        if problem is None and exc_type is None and self.done < len(self.steps):
            want = self.steps[self.done][0]
            problem = (
                f"the driver stopped before step {self.done + 1}: expected {want!r}, "
                f"{self.unfinished}"
            )
        if problem is not None:
            raise AssertionError(f"{problem}\nwire log:\n  " + "\n  ".join(self.log)) from exc
        return False

    # -- peer thread -------------------------------------------------------

    def _read_available(self) -> bytes:
        data = b""
        while True:
            try:
                chunk = os.read(self._master, 4096)
            except (BlockingIOError, OSError):
                return data
            if not chunk:
                return data
            data += chunk

    def _read_exactly(self, n: int) -> bytes:
        got = b""
        deadline = time.monotonic() + self.step_timeout
        while len(got) < n and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([self._master], [], [], min(left, 0.05))
            if ready:
                try:
                    got += os.read(self._master, n - len(got))
                except BlockingIOError:
                    pass
        return got

    def _serve(self) -> None:
        for i, (request, reply) in enumerate(self.steps, 1):
            if request is not None:
                got = self._read_exactly(len(request))
                self.log.append(f"driver> {got!r}")
                if got != request and self._stop.is_set() and request.startswith(got):
                    self.unfinished = f"received {got!r}"
                    return
                if got != request:
                    self.failure = f"step {i}: expected {request!r}, the driver sent {got!r}"
                    return
            if reply:
                os.write(self._master, reply)
                self.log.append(f"peer<   {reply!r}")
            self.done = i
        # Past the script: anything more the driver sends is a failure.
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if ready:
                extra = self._read_available()
                if extra:
                    self.log.append(f"driver> {extra!r}")
                    self.failure = f"unexpected bytes from the driver after the script: {extra!r}"
                    return
