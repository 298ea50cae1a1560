"""Bearer tokens: who may read, who may write, and what stays secret."""

import tempfile
from pathlib import Path

import pytest
from openapicheck import Checker
from orbserver import OrbServer

READ_TOKEN = "r3ad-secret-7f1c2a"
WRITE_TOKEN = "wr1te-secret-9b4e6d"
TOKENS = f"reader:{READ_TOKEN}:read, writer:{WRITE_TOKEN}:write"


@pytest.fixture(scope="module")
def orb(workroot):
    """Return one Orb with read and write tokens for this module."""
    server = OrbServer(
        Path(tempfile.mkdtemp(dir=workroot)), {"ORB_API_TOKENS": TOKENS}
    )
    server.start()
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


def test_files_routes_need_a_token(orb):
    """No token or a wrong one is 401 with a Bearer challenge."""
    before = orb.snapshot()
    wrong = [
        {},
        bearer("not-a-token"),
        bearer(READ_TOKEN + "x"),
        bearer(READ_TOKEN[:-1]),
        {"Authorization": f"Basic {READ_TOKEN}"},
        {"Authorization": "Bearer"},
    ]
    missing = "/api/v1/files/00000000-0000-4000-8000-000000000000"
    checker = Checker(orb.get("/api/v1/openapi.json").json())
    for headers in wrong:
        for answer in (
            orb.get("/api/v1/files", headers=headers),
            orb.get(missing, headers=headers),
            orb.get(missing + "/content", headers=headers),
            orb.upload(b"secret bytes", headers=headers),
            orb.delete(missing, headers=headers),
        ):
            assert answer.status_code == 401, answer.text
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert answer.json()["code"] == "unauthorized"
            checker.check(answer)

    assert orb.snapshot() == before


def test_read_token_reads_but_cannot_write(orb):
    """A read token may GET and HEAD; POST, PATCH and DELETE answer 403."""
    writer = bearer(WRITE_TOKEN)
    created = orb.upload(b"kept bytes", name="kept.txt", headers=writer)
    assert created.status_code == 201, created.text
    record = created.json()
    before = orb.snapshot()

    reader = bearer(READ_TOKEN)
    assert orb.get("/api/v1/files", headers=reader).status_code == 200
    assert orb.get(record["links"]["self"], headers=reader).status_code == 200
    assert orb.get(record["links"]["content"], headers=reader).content == (
        b"kept bytes"
    )
    head = orb.head(record["links"]["content"], headers=reader)
    assert head.status_code == 200

    checker = Checker(orb.get("/api/v1/openapi.json").json())
    for answer in (
        orb.upload(b"other bytes", headers=reader),
        orb.patch(record["links"]["self"], json={"name": "x"}, headers=reader),
        orb.delete(record["links"]["self"], headers=reader),
    ):
        assert answer.status_code == 403, answer.text
        assert answer.json()["code"] == "forbidden"
        checker.check(answer)

    assert orb.snapshot() == before
    assert orb.get(record["links"]["self"], headers=reader).json()["name"] == (
        "kept.txt"
    )


def test_write_token_writes(orb):
    """A write token may upload, rename and delete."""
    writer = bearer(WRITE_TOKEN)
    created = orb.upload(b"abc", headers=writer)
    assert created.status_code == 201
    one = created.json()["links"]["self"]
    renamed = orb.patch(one, json={"name": "b"}, headers=writer)
    assert renamed.status_code == 200
    assert orb.get(one, headers=writer).json()["name"] == "b"
    assert orb.delete(one, headers=writer).status_code == 204
    assert "Token writer: DELETE" in orb.log_text()


def test_status_routes_stay_open_and_tokens_stay_secret(orb):
    """Status routes and the document need no token; no token leaks."""
    for path in ("/", "/health", "/ready", "/status", "/api/v1/openapi.json"):
        answer = orb.get(path)
        assert answer.status_code == 200, path
        assert READ_TOKEN not in answer.text
        assert WRITE_TOKEN not in answer.text

    orb.upload(b"x", headers=bearer(WRITE_TOKEN))
    orb.get("/api/v1/files", headers=bearer(READ_TOKEN + "-wrong"))
    for text in (orb.log_text(), orb.output()):
        assert READ_TOKEN[:8] not in text
        assert WRITE_TOKEN[:8] not in text


def test_malformed_tokens_stop_start_up_with_one_line(tmp_path):
    """A bad ORB_API_TOKENS exits 2 naming the variable, not the secret."""
    for value in (
        f"reader:{READ_TOKEN}",
        f"reader:{READ_TOKEN}:admin",
        f"a:{READ_TOKEN}:read,b:{READ_TOKEN}:write",
        "::read",
    ):
        orb = OrbServer(tmp_path, {"ORB_API_TOKENS": value})
        process = orb.spawn()
        try:
            status = process.wait(60)
        finally:
            orb.stop()

        lines = orb.output().strip().splitlines()
        assert status == 2
        assert len(lines) == 1, lines
        assert lines[0].startswith("orb: configuration error: ORB_API_TOKENS")
        assert READ_TOKEN not in lines[0]
        orb.output_path.unlink()
