"""Bad input gets its documented problem and leaves nothing behind."""

import os
import socket
import tempfile
import uuid
from pathlib import Path

import pytest
from checks import assert_problem
from checks import raw_exchange
from checks import status_of
from conftest import database_env
from orbserver import OrbServer
from orbserver import wait_until
from pgcluster import PostgresCluster

FILES = "/api/v1/files"
SMALL_LIMIT = 10_000


@pytest.fixture
def clean(server):
    """Yield the shared server; afterwards assert nothing was left behind."""
    before = server.snapshot()
    yield server
    assert server.snapshot() == before


@pytest.mark.parametrize(
    "bad_id",
    [
        "nope",
        "123",
        "0" * 32,
        "{" + str(uuid.UUID(int=1)) + "}",
        str(uuid.UUID(int=1))[:-1],
        str(uuid.UUID(int=1)) + "0",
        "urn:uuid:" + str(uuid.UUID(int=1)),
    ],
)
def test_malformed_id(clean, bad_id):
    """A malformed id is 400 invalid_id on every route that takes one."""
    url = f"{FILES}/{bad_id}"
    assert_problem(clean.get(url), 400, "invalid_id")
    assert_problem(clean.get(url + "/content"), 400, "invalid_id")
    assert_problem(clean.delete(url), 400, "invalid_id")
    assert_problem(clean.patch(url, json={"name": "x"}), 400, "invalid_id")


def test_unknown_id(clean):
    """An id no record has is 404 file_not_found everywhere."""
    url = f"{FILES}/{uuid.uuid4()}"
    for response in (
        clean.get(url),
        clean.get(url + "/content"),
        clean.head(url + "/content"),
        clean.delete(url),
    ):
        assert response.status_code == 404
    assert_problem(clean.get(url), 404, "file_not_found")
    assert_problem(clean.delete(url), 404, "file_not_found")


@pytest.mark.parametrize(
    "name",
    [
        "bell\x07.txt",
        "new\nline.txt",
        "nul\x00.txt",
        "del\x7f.txt",
        "c1\x85.txt",
        "\u202etxt.exe",
        "\u00e9" * 128,
        "a" * 256,
        "",
    ],
)
def test_bad_name_raw(clean, name):
    """A control character, over 255 bytes or no name is invalid_name."""
    assert_problem(clean.upload(b"data", name=name), 400, "invalid_name")


def test_name_not_utf8(clean):
    """Percent-escapes that are not UTF-8 are refused, not kept as text."""
    answer = raw_exchange(
        clean.port,
        b"POST /api/v1/files?name=%FF%FEx HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 1\r\nConnection: close\r\n\r\nx",
    )
    assert status_of(answer) == 400, answer
    assert b'"invalid_name"' in answer
    for disposition in (
        "attachment; filename*=UTF-8''%FF%FE.txt",
        "attachment; filename*=KOI8-R''%C1.txt",
    ):
        response = clean.post(
            FILES, data=b"x", headers={"Content-Disposition": disposition}
        )
        assert_problem(response, 400, "invalid_name")


def test_name_of_255_bytes_is_fine(server):
    """Exactly 255 UTF-8 bytes is still a valid name."""
    name = "\u00e9" * 127 + "a"
    response = server.upload(b"long name", name=name)
    assert response.status_code == 201
    assert response.json()["name"] == name
    assert server.delete(response.json()["links"]["self"]).status_code == 204


def test_bad_name_multipart(clean):
    """The filename of a multipart file part follows the same rules."""
    response = clean.post(
        FILES, files={"file": ("tab\there.txt", b"x", "text/plain")}
    )
    assert_problem(response, 400, "invalid_name")
    response = clean.post(
        FILES, files={"file": ("a" * 300, b"x", "text/plain")}
    )
    assert_problem(response, 400, "invalid_name")


def test_no_name(clean):
    """A raw upload with neither ?name= nor Content-Disposition is refused."""
    response = clean.post(FILES, data=b"anonymous")
    assert_problem(response, 400, "invalid_name")
    response = clean.post(
        FILES, data=b"x", headers={"Content-Disposition": "attachment"}
    )
    assert_problem(response, 400, "invalid_name")


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """Encode (name, filename, data) parts; return the body and its type."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += (
            (
                f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "parts",
    [
        [],
        [("metadata", None, b"{}")],
        [("other", "a.txt", b"x")],
        [("file", "a.txt", b"one"), ("file", "b.txt", b"two")],
        [("file", "a.txt", os.urandom(200_000)), ("file", "b.txt", b"two")],
        [("file", None, b"no filename")],
    ],
    ids=[
        "empty",
        "metadata-only",
        "other-part",
        "two-files",
        "two-files-big",
        "file-field",
    ],
)
def test_multipart_needs_exactly_one_file(clean, parts):
    """No file part, two of them, or a file without filename is 400."""
    body, content_type = multipart(parts)
    response = clean.post(
        FILES, data=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] in ("invalid_multipart", "invalid_name")


@pytest.mark.parametrize(
    "metadata",
    [
        b"not json",
        b"[1]",
        b'{"k": 1}',
        b'{"bad key": "v"}',
        b'{"k": "' + b"v" * 1025 + b'"}',
    ],
)
def test_bad_multipart_metadata(clean, metadata):
    """A metadata field that is not a flat string object is 400."""
    body, content_type = multipart(
        [("metadata", None, metadata), ("file", "m.txt", b"x")]
    )
    response = clean.post(
        FILES, data=body, headers={"Content-Type": content_type}
    )
    assert_problem(response, 400, "invalid_metadata")


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", 'multipart/form-data; boundary=""'],
)
def test_multipart_without_boundary(clean, content_type):
    """A multipart body without a boundary is 400."""
    response = clean.post(
        FILES, data=b"--x\r\n", headers={"Content-Type": content_type}
    )
    assert_problem(response, 400, "invalid_multipart")


def test_truncated_multipart(clean):
    """A multipart body without its closing boundary stores nothing."""
    body, content_type = multipart([("file", "cut.bin", os.urandom(5000))])
    response = clean.post(
        FILES, data=body[:-40], headers={"Content-Type": content_type}
    )
    assert_problem(response, 400, "invalid_multipart")


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Orb-Meta-bad!key": "v"},
        {"X-Orb-Meta-k": "v" * 1025},
    ],
)
def test_bad_metadata_header(clean, headers):
    """A metadata header with a bad key or long value is 400."""
    assert_problem(
        clean.upload(b"x", headers=headers), 400, "invalid_metadata"
    )


def test_metadata_header_with_underscore_is_refused(clean):
    """Such a header was once dropped silently, losing the metadata."""
    response = clean.upload(b"x", headers={"X-Orb-Meta-my_key": "v"})
    assert response.status_code == 400


def test_too_many_metadata_keys(clean):
    """More than 64 metadata keys is 400."""
    headers = {f"X-Orb-Meta-k{i}": "v" for i in range(65)}
    assert_problem(
        clean.upload(b"x", headers=headers), 400, "invalid_metadata"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Orb-SHA256": "zz"},
        {"X-Orb-SHA256": "ab" * 31},
        {"Content-Digest": "sha-256=:not base64!:"},
        {"Content-Digest": "sha-256=:AAAA:"},
    ],
)
def test_malformed_digest(clean, headers):
    """A digest header that is not a sha-256 is refused before storing."""
    assert_problem(clean.upload(b"x", headers=headers), 400, "invalid_digest")


def test_wrong_digest(clean):
    """A digest of other bytes is 400 digest_mismatch."""
    response = clean.upload(
        os.urandom(300_000), headers={"X-Orb-SHA256": "0" * 64}
    )
    assert_problem(response, 400, "digest_mismatch")


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "abc"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": ""},
        {"limit": "1.5"},
        {"sha256": "xyz"},
        {"sha256": "a" * 63},
        {"prefix": "a\x00b"},
        {"content_type": "text/\x00"},
        {"prefix": "p" * 1025},
    ],
)
def test_bad_list_parameters(clean, params):
    """limit outside 1..1000 or a bad sha256 is 400 invalid_parameter."""
    assert_problem(clean.get(FILES, params=params), 400, "invalid_parameter")


def test_limit_bounds_accepted(server):
    """limit=1 and limit=1000 are valid."""
    assert server.get(FILES, params={"limit": "1"}).status_code == 200
    assert server.get(FILES, params={"limit": "1000"}).status_code == 200


def test_tampered_and_foreign_cursor(server):
    """A changed cursor, or one made for other filters, is refused."""
    for index in range(3):
        server.upload(b"c%d" % index, name=f"cursor-{index}")
    cursor = server.get(FILES, params={"limit": 1}).json()["next_cursor"]
    assert cursor

    middle = len(cursor) // 2
    flipped = "A" if cursor[middle] != "A" else "B"
    tampered = cursor[:middle] + flipped + cursor[middle + 1 :]
    for bad in (tampered, cursor[:-3], "garbage", cursor + "x"):
        assert_problem(
            server.get(FILES, params={"limit": 1, "cursor": bad}),
            400,
            "invalid_parameter",
        )

    assert_problem(
        server.get(
            FILES, params={"limit": 1, "cursor": cursor, "prefix": "c"}
        ),
        400,
        "invalid_parameter",
    )
    ok = server.get(FILES, params={"limit": 1, "cursor": cursor})
    assert ok.status_code == 200


def test_unsatisfiable_range_stores_nothing(clean):
    """An unsatisfiable range is 416 and changes nothing."""
    record = clean.upload(b"0123456789", name="r.txt").json()
    response = clean.get(
        record["links"]["content"], headers={"Range": "bytes=10-"}
    )
    assert_problem(response, 416, "range_not_satisfiable")
    assert response.headers["Content-Range"] == "bytes */10"
    assert clean.delete(record["links"]["self"]).status_code == 204


def test_raw_body_without_length_is_411(clean):
    """A raw body with neither Content-Length nor chunked is 411."""
    request = (
        f"POST {FILES}?name=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = raw_exchange(clean.port, request)
    assert status_of(answer) == 411, answer[:500]
    assert b"application/problem+json" in answer
    assert b'"length_required"' in answer


@pytest.fixture(scope="module")
def small_server(request, workroot):
    """Return a SQLite server with a small upload limit, shared here."""
    workdir = Path(tempfile.mkdtemp(dir=workroot))
    orb = OrbServer(
        workdir,
        {
            **database_env("sqlite", request),
            "ORB_MAX_UPLOAD_BYTES": str(SMALL_LIMIT),
        },
    )
    orb.start()
    yield orb
    orb.stop()


def test_limit_exactly_is_accepted(small_server):
    """An upload of exactly ORB_MAX_UPLOAD_BYTES is stored."""
    response = small_server.upload(os.urandom(SMALL_LIMIT))
    assert response.status_code == 201, response.text
    assert (
        small_server.delete(response.json()["links"]["self"]).status_code
        == 204
    )


@pytest.mark.parametrize("size", [SMALL_LIMIT + 1, 20_000_000])
def test_too_large_with_content_length(small_server, size):
    """A Content-Length past the limit is 413 too_large."""
    before = small_server.snapshot()
    response = small_server.upload(os.urandom(size))
    assert_problem(response, 413, "too_large")
    assert small_server.snapshot() == before


def test_too_large_chunked(small_server):
    """A chunked body that grows past the limit is 413 too_large."""
    before = small_server.snapshot()

    def body():
        for _ in range(6):
            yield os.urandom(2500)

    response = small_server.post(FILES, params={"name": "big"}, data=body())
    assert_problem(response, 413, "too_large")
    assert small_server.snapshot() == before


def test_too_large_multipart(small_server):
    """A multipart file part past the limit is 413, with or without length."""
    before = small_server.snapshot()
    body, content_type = multipart(
        [("file", "big.bin", os.urandom(SMALL_LIMIT + 1))]
    )
    response = small_server.post(
        FILES, data=body, headers={"Content-Type": content_type}
    )
    assert_problem(response, 413, "too_large")

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = small_server.post(
        FILES, data=chunks(), headers={"Content-Type": content_type}
    )
    assert_problem(response, 413, "too_large")
    assert small_server.snapshot() == before


def test_too_large_raw_socket_without_length(small_server):
    """413 also when the chunked body is far larger than the limit."""
    before = small_server.snapshot()
    head = (
        f"POST {FILES}?name=huge HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    chunk = os.urandom(4000)
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5))
    answer = raw_exchange(small_server.port, head + body + b"0\r\n\r\n")
    assert status_of(answer) == 413
    assert b'"too_large"' in answer
    assert small_server.snapshot() == before


@pytest.mark.parametrize("form", ["raw", "multipart", "chunked"])
def test_client_disconnects_mid_body(server, form):
    """A client that hangs up half-way through its body leaves nothing."""
    before = server.snapshot()
    data = os.urandom(4_000_000)
    if form == "multipart":
        body, content_type = multipart([("file", "cut.bin", data)])
        framing = (
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}"
        )
    elif form == "raw":
        body = data
        framing = f"Content-Length: {len(body)}"
    else:
        body = b"%x\r\n%s\r\n" % (len(data), data)
        framing = "Transfer-Encoding: chunked"

    head = (
        f"POST {FILES}?name=cut.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"{framing}\r\n\r\n"
    ).encode()
    with socket.create_connection(
        ("127.0.0.1", server.port), timeout=30
    ) as sock:
        sock.sendall(head + body[: len(body) // 2])
        wait_until(lambda: server.temp_files(), 30, what="the upload to start")

    wait_until(
        lambda: server.snapshot() == before,
        60,
        what="the partial upload to be cleaned up",
    )
    assert server.get("/health").status_code == 200


# The database stopped mid-run


@pytest.fixture
def private_pg():
    """Return a PostgreSQL cluster this test alone may stop and start."""
    bin_dir = os.environ.get("ORB_TEST_PG_BIN")
    if not bin_dir:
        pytest.skip("no PostgreSQL: run the suite with scripts/test")

    cluster = PostgresCluster(bin_dir).create()
    yield cluster
    cluster.remove()


def test_database_stopped_mid_run(make_server, private_pg):
    """With the database gone Orb stays up, says so, and recovers alone."""
    orb = make_server(
        "postgresql", DATABASE_URL=private_pg.url, ORB_WORKERS="1"
    )
    kept = orb.upload(b"before the outage", name="kept.txt").json()

    private_pg.stop()

    ready = orb.get("/ready")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "not_ready"
    assert body["checks"]["database"]["status"] == "fail"
    assert "database" in body["checks"]["database"]["detail"]

    blobs, temps = orb.blob_files(), orb.temp_files()
    assert_problem(orb.get(FILES), 503, "database_unavailable")
    assert_problem(orb.get(kept["links"]["self"]), 503, "database_unavailable")
    assert_problem(
        orb.upload(os.urandom(100_000), name="lost.bin"),
        503,
        "database_unavailable",
    )
    assert_problem(
        orb.delete(kept["links"]["self"]), 503, "database_unavailable"
    )
    assert orb.blob_files() == blobs
    assert orb.temp_files() == temps == []

    health = orb.get("/health")
    assert health.status_code == 200
    status = orb.get("/status")
    assert status.status_code == 200
    assert status.json()["database"]["reachable"] is False
    assert orb.process.poll() is None

    private_pg.start()
    wait_until(
        lambda: orb.get("/ready").status_code == 200, 60, what="/ready again"
    )
    assert orb.get(kept["links"]["content"]).content == b"before the outage"
    again = orb.upload(b"after the outage", name="again.txt")
    assert again.status_code == 201
    names = {item["name"] for item in orb.get(FILES).json()["items"]}
    assert names == {"kept.txt", "again.txt"}
    assert orb.counts() == (2, 2)
    assert orb.process.poll() is None


def test_database_down_at_start(make_server, private_pg):
    """Orb starts without its database and migrates once it appears."""
    private_pg.stop()
    orb = make_server(
        "postgresql",
        start=False,
        DATABASE_URL=private_pg.url,
        ORB_WORKERS="1",
    )
    orb.start(ready=False)
    ready = orb.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "fail"
    assert_problem(orb.get(FILES), 503, "database_unavailable")

    private_pg.start()
    wait_until(
        lambda: orb.get("/ready").status_code == 200,
        90,
        what="/ready once the database is back",
    )
    assert orb.upload(b"late", name="late.txt").status_code == 201
    assert orb.counts() == (1, 1)
