"""Run one simulator in the foreground until SIGINT/SIGTERM (``station sim ...``).

Every simulator command does the same: build the device, start it and its
control port, print one line saying where both are (JSON for tests and the
demo, or a sentence for a person), then block until asked to stop, and stop
the device so its by-id link goes away. Only the device and its messages
differ; they are the caller's.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

PLACE_FIX = "choose another --link path or --tcp/--control address"


def host_port(text: str) -> tuple[str, int]:
    """argparse type for ``HOST:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def cannot_start(e: Exception, what: str = "the simulator") -> tuple[str, int]:
    """The refusal for a port or control address that cannot be used (exit status 1)."""
    return f"error: cannot start {what}: {e}. Fix: {PLACE_FIX}", 1


def serve(
    make: Callable[[], Any],
    control: tuple[str, int],
    *,
    as_json: bool,
    describe: Callable[[Any], str],
    refuse: Callable[[Exception], tuple[str, int]] = cannot_start,
    json_fields: dict[str, object] | None = None,
) -> int:
    """Start ``make()`` and its control port on ``control``; block until a stop signal.

    ``refuse`` turns an ``OSError``/``ValueError`` raised while starting into
    (message for stderr, exit status). The JSON line is ``{"port", "control",
    "serial", **json_fields}``; the human one is ``describe(sim)`` and where
    the device and its control port are.
    """
    stop, sim = threading.Event(), None
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim = make()
            sim.start()
            host, port = sim.start_control(*control)
        except (OSError, ValueError) as e:
            message, status = refuse(e)
            print(message, file=sys.stderr)
            return status
        if as_json:
            print(json.dumps({"port": sim.port, "control": f"{host}:{port}", "serial": sim.serial,
                              **(json_fields or {})}))
        else:
            print(f"{describe(sim)} on {sim.port}; control on {host}:{port}")
        sys.stdout.flush()
        while not stop.wait(0.5):
            pass
    finally:
        if sim is not None:
            sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
