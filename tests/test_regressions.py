"""Faults a new user's trial found; each test names the fault it guards."""

import base64
import hashlib
import os

import pytest
from checks import assert_problem


def upload(server, data: bytes, **headers) -> dict:
    """Upload bytes and return the record."""
    answer = server.upload(data, name="trial.bin", headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.mark.parametrize(
    "header",
    [
        {"If-Match": '"' + "0" * 64 + '"'},
        {"If-Unmodified-Since": "Wed, 01 Jan 2020 00:00:00 GMT"},
    ],
)
def test_failed_precondition_stops_delete_and_patch(server, header):
    """A PATCH or DELETE with a failing If-* header was carried out."""
    record = upload(server, os.urandom(1000))
    location = record["links"]["self"]

    patched = server.patch(location, json={"name": "renamed"}, headers=header)
    assert_problem(patched, 412, "precondition_failed")
    deleted = server.delete(location, headers=header)
    assert_problem(deleted, 412, "precondition_failed")

    assert server.get(location).json()["name"] == "trial.bin"
    matching = {"If-Match": f'"{record["sha256"]}"'}
    assert server.delete(location, headers=matching).status_code == 204


def test_reupload_heals_a_damaged_blob(server):
    """Uploading good bytes again left a corrupted blob in place."""
    data = os.urandom(50_000)
    first = upload(server, data)
    blob = next(
        path
        for path in (server.storage_dir / "blobs").rglob(first["sha256"])
    )
    blob.write_bytes(b"XXXXX" + data[5:])

    second = upload(server, data)
    for record in (first, second):
        content = server.get(record["links"]["content"])
        assert content.status_code == 200
        assert hashlib.sha256(content.content).hexdigest() == record["sha256"]

    for record in (first, second):
        server.delete(record["links"]["self"])


def test_head_refuses_a_missing_blob_like_get(server):
    """HEAD answered 200 for a file whose blob was gone; GET answered 500."""
    record = upload(server, os.urandom(2000))
    blob = next((server.storage_dir / "blobs").rglob(record["sha256"]))
    blob.unlink()

    head = server.head(record["links"]["content"])
    get = server.get(record["links"]["content"])
    assert head.status_code == get.status_code == 500
    assert server.delete(record["links"]["self"]).status_code == 204


@pytest.mark.parametrize(
    "body",
    [
        "[" * 5000 + "]" * 5000,
        '{"metadata": ' + '{"a": ' * 5000 + "1" + "}" * 5001,
    ],
)
def test_deeply_nested_patch_is_refused(server, body):
    """A deeply nested PATCH body raised RecursionError: a 500."""
    record = upload(server, os.urandom(100))
    answer = server.patch(
        record["links"]["self"],
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert server.delete(record["links"]["self"]).status_code == 204


@pytest.mark.parametrize(
    "value",
    [
        "sha-256={digest}",
        'sha-256="{digest}"',
        "SHA-256=:{digest}:",
        "garbage(((",
        "sha-512=:{digest}:",
        "sha-256=:{digest}:, sha-256=:{wrong}:",
    ],
)
def test_malformed_content_digest_is_refused(server, value):
    """A malformed Content-Digest was skipped and the bytes not verified."""
    data = os.urandom(3000)
    digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    before = server.snapshot()

    answer = server.upload(
        data,
        headers={"Content-Digest": value.format(digest=digest, wrong=wrong)},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] in ("invalid_digest", "digest_mismatch")
    assert server.snapshot() == before


def test_raw_utf8_filename_is_decoded(server):
    """A raw UTF-8 Content-Disposition filename was stored as mojibake."""
    answer = server.post(
        "/api/v1/files",
        data=b"bytes",
        headers={
            "Content-Disposition": 'attachment; filename="café.txt"'.encode()
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "café.txt"
    assert server.delete(answer.json()["links"]["self"]).status_code == 204


def test_fsck_reports_despite_a_stray_file(make_server):
    """A stray file under blobs/ made fsck crash with a traceback."""
    server = make_server()
    record = upload(server, os.urandom(500))
    stray = server.storage_dir / "blobs" / "ab" / "stray"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not a blob")

    result = server.flask("orb", "fsck")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checked 1 blobs" in result.stdout
    assert "Traceback" not in result.stderr
    assert server.get(record["links"]["content"]).status_code == 200
