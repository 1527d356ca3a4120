import hashlib
import os

import pytest

from station.errors import OutboxError
from station.records.artifacts import ArtifactStore


def test_put_is_content_addressed_durable_and_checked(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    data = bytes(range(256)) * 40
    ref = store.put(data, "application/cbor", ".spectrum.cbor")
    assert ref.sha256 == hashlib.sha256(data).digest()
    assert ref.size == len(data) and ref.name == f"{ref.sha256.hex()}.spectrum.cbor"
    assert (tmp_path / "artifacts" / ref.name).read_bytes() == data
    assert not [p for p in (tmp_path / "artifacts").iterdir() if p.name.startswith(".")]  # no temp files left
    assert store.put(data, "application/cbor", ".spectrum.cbor") == ref  # idempotent
    assert store.read(ref) == data


def test_a_changed_or_missing_artifact_is_an_error(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.put(b"spectrum", "application/cbor", ".cbor")
    (tmp_path / ref.name).write_bytes(b"spectrun")
    with pytest.raises(OutboxError, match="does not match"):
        store.read(ref)
    os.unlink(tmp_path / ref.name)
    with pytest.raises(OutboxError, match="missing"):
        store.read(ref)


def test_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError, match="cannot store artifact") as info:
        ArtifactStore(blocker / "artifacts").put(b"x", "application/octet-stream", ".bin")
    assert "writable" in info.value.fix
