"""Blob storage: crash leftovers cleaned at start, and `flask orb fsck`."""

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from conftest import BACKENDS
from conftest import database_env
from orbserver import OrbServer


def blob_path(orb, sha256: str):
    return orb.storage_dir / "blobs" / sha256[:2] / sha256[2:4] / sha256


def plant_orphan(orb, data: bytes) -> str:
    """Write a blob file that no record refers to; return its sha256."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = blob_path(orb, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return sha256


@pytest.mark.parametrize("backend", BACKENDS)
def test_crash_leftovers_removed_at_start(make_server, backend):
    """Unlocked partial uploads and orphan blobs go at the next start."""
    orb = make_server(backend)
    data = os.urandom(50_000)
    kept = orb.upload(data, name="kept.bin").json()
    orb.stop()

    tmp = orb.storage_dir / "tmp"
    abandoned = tmp / "0123abandoned.part"
    abandoned.write_bytes(os.urandom(1000))
    live = tmp / "4567live.part"
    live.write_bytes(b"still being written")
    orphan = plant_orphan(orb, os.urandom(3000))

    with open(live, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        orb.start()
        assert not abandoned.exists()
        assert live.exists()
        assert not blob_path(orb, orphan).exists()

    assert orb.blob_files() == [kept["sha256"]]
    assert orb.counts() == (1, 1)
    assert orb.get(kept["links"]["content"]).content == data
    assert (
        "Start-up clean-up removed 1 partial files and 1 orphan blobs"
        in orb.log_text()
    )
    earlier = list(orb.log_dir.glob("orb_api.*.log"))
    assert len(earlier) == 1
    assert "Stored file " + kept["id"] in earlier[0].read_text()
    assert "Stored file " + kept["id"] not in orb.log_text()


@pytest.fixture(scope="module", params=BACKENDS)
def stocked_server(request, workroot):
    """Return a server holding two files with distinct bytes, per backend."""
    orb = OrbServer(
        Path(tempfile.mkdtemp(dir=workroot)),
        database_env(request.param, request),
    )
    orb.start()
    records = [
        orb.upload(os.urandom(20_000 + index), name=f"f{index}").json()
        for index in range(2)
    ]
    yield orb, records
    orb.stop()


@pytest.fixture
def stocked(stocked_server):
    """Yield the stocked server; put its blobs back as they were after."""
    orb, records = stocked_server
    saved = {
        record["sha256"]: blob_path(orb, record["sha256"]).read_bytes()
        for record in records
    }
    yield orb, records
    for sha256, data in saved.items():
        blob_path(orb, sha256).write_bytes(data)
    assert orb.flask("orb", "fsck").returncode == 0


def test_fsck_healthy(stocked):
    """A healthy store checks clean and exits 0."""
    orb, _ = stocked
    result = orb.flask("orb", "fsck")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 2 blobs: 0 corrupt, 0 missing, 0 orphaned" in result.stdout


def test_fsck_reports_corrupt_blob(stocked):
    """A blob whose bytes changed is reported with its file ids; exit 1."""
    orb, records = stocked
    victim = records[0]
    path = blob_path(orb, victim["sha256"])
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))

    result = orb.flask("orb", "fsck")
    assert result.returncode == 1
    assert f"corrupt {victim['sha256']} files: {victim['id']}" in result.stdout
    assert records[1]["sha256"] not in result.stdout

    repaired = orb.flask("orb", "fsck", "--repair")
    assert repaired.returncode == 1
    assert path.exists()


def test_fsck_reports_missing_blob(stocked):
    """A record whose blob file is gone is reported as missing; exit 1."""
    orb, records = stocked
    blob_path(orb, records[1]["sha256"]).unlink()
    result = orb.flask("orb", "fsck")
    assert result.returncode == 1
    assert (
        f"missing {records[1]['sha256']} files: {records[1]['id']}"
        in result.stdout
    )


def test_fsck_orphans_and_repair(stocked):
    """Orphans are reported (exit 1); --repair removes them, then exit 0."""
    orb, records = stocked
    orphan = plant_orphan(orb, os.urandom(5000))

    result = orb.flask("orb", "fsck")
    assert result.returncode == 1
    assert f"orphaned {orphan} (kept)" in result.stdout
    assert blob_path(orb, orphan).exists()

    repaired = orb.flask("orb", "fsck", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"orphaned {orphan} (removed)" in repaired.stdout
    assert not blob_path(orb, orphan).exists()

    again = orb.flask("orb", "fsck")
    assert again.returncode == 0
    assert sorted(orb.blob_files()) == sorted(r["sha256"] for r in records)
    for record in records:
        assert orb.get(record["links"]["content"]).status_code == 200
