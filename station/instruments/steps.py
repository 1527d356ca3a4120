"""Further instrument steps of the stone session, after the stable weight.

Each instrument whose kind has a step builder here becomes one step, in the
order its table appears in the config. A step returns readings (values or
artifacts stored before it returns) and may attach ``details`` and a ``note``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from station.instruments.devices import Instrument
from station.records.artifacts import ArtifactStore

Keepalive = Callable[[], None]  # a long step calls it between device calls: the session is alive
# kind -> (instrument, artifact store, keepalive) -> a session Step (station/session/stone.py)
STEP_BUILDERS: dict[str, Callable[[Instrument, ArtifactStore, Keepalive], Any]] = {}


def build_steps(instruments: Sequence[Instrument], artifacts: ArtifactStore,
                keepalive: Keepalive = lambda: None) -> list[Any]:
    return [STEP_BUILDERS[i.kind](i, artifacts, keepalive) for i in instruments if i.kind in STEP_BUILDERS]


def _spectrometer(instrument: Instrument, artifacts: ArtifactStore, keepalive: Keepalive) -> Any:
    from station.instruments.spectro_step import build  # numpy and the spectra chain only when configured

    return build(instrument, artifacts, keepalive)


STEP_BUILDERS["spectrometer"] = _spectrometer
