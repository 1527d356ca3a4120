"""What every simulator does around its protocol: start, stop, unplug and
replug its wire, and serve the control port.

A simulator keeps its wire in ``self._wire``: a :class:`~drivers.sim.port.SimPort`
(line and byte protocols) or a :class:`~drivers.sim.modbus_wire.ModbusWire`;
both have ``path``, ``plugged``, ``start``, ``stop``, ``unplug`` and
``replug``. It implements ``status``, ``inject`` and ``clear_faults`` for the
control port (``drivers/sim/control.py``).
"""

from __future__ import annotations

from typing import Any

from drivers.sim import control


class SimulatedDevice:
    _wire: Any
    _control: control.ControlServer | None = None

    @property
    def port(self) -> str:
        """What a driver opens: a by-id style symlink, a pty, or a TCP URL."""
        return self._wire.path

    @property
    def plugged(self) -> bool:
        return self._wire.plugged

    def start(self):
        self._wire.start()
        return self

    def stop(self) -> None:
        self.stop_control()
        self._wire.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        self._wire.unplug()

    def replug(self) -> None:
        self._wire.replug()

    # -- control interface (drivers/sim/control.py) -------------------------

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
