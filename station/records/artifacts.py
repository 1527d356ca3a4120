"""Artifacts (spectra, images) live next to the outbox, never inside a record.

A record carries an artifact's SHA-256, media type, size and file name, so the
signed record vouches for the stored bytes. Files are content-addressed, and
each is written to a temporary name, fsynced, renamed and its directory
fsynced *before* the step that made it returns, hence before the record that
names it can be committed: a record never points at a file a crash could lose.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from station.errors import OutboxError
from station.instruments.reading import ArtifactRef

ARTIFACTS_DIR = "artifacts"


class ArtifactStore:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def put(self, data: bytes, media_type: str, suffix: str) -> ArtifactRef:
        digest = hashlib.sha256(data).digest()
        name = f"{digest.hex()}{suffix}"
        path = self.directory / name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not (path.exists() and path.stat().st_size == len(data)):
                tmp = self.directory / f".{name}.{os.getpid()}.tmp"
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                dir_fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise OutboxError(f"cannot store artifact {name} in {self.directory}: {exc.strerror or exc}",
                              f"free disk space and make {self.directory} writable by the station user") from exc
        return ArtifactRef(sha256=digest, media_type=media_type, size=len(data), name=name)

    def read(self, ref: ArtifactRef) -> bytes:
        """The stored bytes, checked against the reference (a changed file is an error)."""
        path = self.directory / ref.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OutboxError(f"artifact {ref.name} is missing from {self.directory}: {exc.strerror or exc}",
                              "restore it from a backup; the record that names it cannot be re-checked without it") from exc
        if hashlib.sha256(data).digest() != ref.sha256 or len(data) != ref.size:
            raise OutboxError(f"artifact {ref.name} does not match its record's SHA-256",
                              "the file was changed after it was recorded; restore it from a backup")
        return data
