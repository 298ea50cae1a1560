"""A file of 100 MiB goes up and comes back intact, by curl."""

import hashlib
import json
import os
import shutil
import subprocess

import pytest

SIZE = 100 * 1024 * 1024
BLOCK = 4 * 1024 * 1024


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)

    return digest.hexdigest()


@pytest.mark.slow
def test_100_mib_round_trip_by_curl(make_server, tmp_path):
    """curl uploads 100 MiB and downloads the same bytes (PostgreSQL)."""
    assert shutil.which("curl"), "curl is required (scripts/test installs it)"
    orb = make_server("postgresql", ORB_MAX_UPLOAD_BYTES=str(SIZE))
    source = tmp_path / "big.bin"
    with open(source, "wb") as handle:
        for _ in range(SIZE // BLOCK):
            handle.write(os.urandom(BLOCK))
    expected = file_sha256(source)

    upload = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "--data-binary",
            f"@{source}",
            "-H",
            "Content-Type: application/octet-stream",
            "-H",
            f"X-Orb-SHA256: {expected}",
            f"{orb.url}/api/v1/files?name=big.bin",
        ],
        capture_output=True,
        timeout=600,
    )
    assert upload.returncode == 0, upload.stderr + upload.stdout
    record = json.loads(upload.stdout)
    assert record["size"] == SIZE
    assert record["sha256"] == expected
    source.unlink()

    target = tmp_path / "back.bin"
    download = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            str(target),
            orb.url + record["links"]["content"],
        ],
        capture_output=True,
        timeout=600,
    )
    assert download.returncode == 0, download.stderr
    assert target.stat().st_size == SIZE
    assert file_sha256(target) == expected
    assert orb.temp_files() == []
