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

# kind -> (instrument, artifact store) -> a session Step (station/session/stone.py)
STEP_BUILDERS: dict[str, Callable[[Instrument, ArtifactStore], Any]] = {}


def build_steps(instruments: Sequence[Instrument], artifacts: ArtifactStore) -> list[Any]:
    return [STEP_BUILDERS[i.kind](i, artifacts) for i in instruments if i.kind in STEP_BUILDERS]


def _spectrometer(instrument: Instrument, artifacts: ArtifactStore) -> Any:
    from station.instruments.spectro_step import build  # numpy and the spectra chain only when configured

    return build(instrument, artifacts)


STEP_BUILDERS["spectrometer"] = _spectrometer
