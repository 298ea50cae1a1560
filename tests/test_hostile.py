"""Hostile and broken input: a clear problem answer, nothing stored or lost."""

import json
import os
import re
import socket
from urllib.parse import quote

import pytest
from itsdangerous import URLSafeSerializer
from orbserver import wait_until
from rawhttp import exchange
from rawhttp import headers_of
from rawhttp import json_of
from rawhttp import read_answer
from rawhttp import status_of

SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def sentinel(server):
    """Upload a file that every hostile request must leave intact."""
    data = os.urandom(4096)
    answer = server.upload(data, name="sentinel.bin")
    assert answer.status_code == 201
    yield answer.json(), data
    content = server.get(answer.json()["links"]["content"])
    assert content.status_code == 200
    assert content.content == data


def assert_refused(answer, status: int, code: str | None = None) -> None:
    """Assert a problem answer with this status (and code)."""
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    if code:
        assert answer.json()["code"] == code


def storage_paths(server) -> list[str]:
    """Return every path under the storage directory, relative to it."""
    return sorted(
        str(path.relative_to(server.storage_dir))
        for path in server.storage_dir.rglob("*")
    )


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "..\\x", "/abs", "/etc/shadow", "..", "C:\\boot.ini"],
)
def test_path_like_names_are_only_labels(server, sentinel, name):
    """A path-like name is stored as a label; no path on disk uses it."""
    data = os.urandom(100)
    answer = server.upload(data, name=name)
    assert answer.status_code == 201, answer.text
    record = answer.json()
    assert record["name"] == name
    assert all(
        SHA256_NAME.match(path.rsplit("/", 1)[-1])
        or path in ("blobs", "tmp")
        or re.fullmatch(r"blobs/[0-9a-f]{2}(/[0-9a-f]{2})?", path)
        for path in storage_paths(server)
    )
    download = server.get(record["links"]["content"])
    assert download.content == data
    disposition = download.headers["Content-Disposition"]
    assert "/" not in disposition.split("filename=", 1)[1].split(";")[0]
    assert server.delete(record["links"]["self"]).status_code == 204


@pytest.mark.parametrize(
    "name",
    [
        "a\x00b",
        "x" * 10_000,
        "é" * 128,
        "evil\u202egpj.exe",
        "\u2066isolate",
        "line\nbreak",
        "tab\tname",
        "",
    ],
)
def test_bad_names_are_refused(server, sentinel, name):
    """NUL, over-long, control and bidi-override names answer 400."""
    before = server.snapshot()
    answer = server.upload(b"data", name=name)
    if len(name) > 8000:
        assert_refused(answer, 414, "uri_too_long")
    else:
        assert_refused(answer, 400, "invalid_name")

    # urllib3 writes a newline in a multipart filename as %0A, a fair label.
    if name and "\n" not in name:
        files = {"file": (name, b"data", "text/plain")}
        assert_refused(
            server.post("/api/v1/files", files=files), 400, "invalid_name"
        )

    record = sentinel[0]
    answer = server.patch(record["links"]["self"], json={"name": name})
    assert_refused(answer, 400, "invalid_name")
    assert server.snapshot() == before
    assert server.get(record["links"]["self"]).json()["name"] == "sentinel.bin"


@pytest.mark.parametrize(
    "disposition",
    [
        "attachment; filename*=UTF-8''%FF%FE.txt",
        "attachment; filename*=UTF-8''%C0%AF..%C0%AFetc",
        "attachment; filename*=UTF-8''%00.txt",
        "attachment; filename*=UTF-8''%E2%80%AEgpj.exe",
        "attachment; filename*=latin-1''caf%E9",
        "attachment; filename*=caf%C3%A9",
        "attachment; filename=\"ok.txt\"; filename*=UTF-8''%FF",
    ],
)
def test_bad_filename_star_is_refused(server, sentinel, disposition):
    """Invalid UTF-8, NUL or bidi overrides in filename* answer 400."""
    before = server.snapshot()
    answer = server.post(
        "/api/v1/files",
        data=b"data",
        headers={"Content-Disposition": disposition},
    )
    assert_refused(answer, 400, "invalid_name")
    assert server.snapshot() == before


def test_good_filename_star_wins_over_filename(server, sentinel):
    """filename* names the file in UTF-8, over the ASCII filename."""
    name = "résumé ../ 雪.txt"
    answer = server.post(
        "/api/v1/files",
        data=b"data",
        headers={
            "Content-Disposition": "attachment; filename=\"plain.txt\"; "
            f"filename*=UTF-8''{quote(name, safe='')}"
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == name
    assert server.delete(answer.json()["links"]["self"]).status_code == 204


@pytest.mark.parametrize(
    "header",
    [
        "bytes=-1-5",
        "bytes=--5",
        "bytes=9-1",
        "bytes=0-99999999999999999999999999999999999",
        "bytes=99999999999999999999999999999999999-",
        "bytes=-99999999999999999999999999999999999",
        "bytes=" + ",".join(f"{i}-{i}" for i in range(1000)),
        "bytes=" + ",".join("0-" for _ in range(1000)),
        "bytes=" + ",".join(f"-{i + 1}" for i in range(1000)),
        "bytes=" + "0" * 8000 + "-1",
        "bytes=1-0,5-",
        "items=0-5",
        "bytes=",
        "bytes=,,,,",
        "bytes 0-5",
    ],
)
def test_hostile_ranges_are_answered_plainly(server, sentinel, header):
    """Odd ranges answer 200, 206 or 416 with the right bytes, never 5xx."""
    record, data = sentinel
    answer = server.get(record["links"]["content"], headers={"Range": header})
    assert answer.status_code in (200, 206, 416), answer.text
    if answer.status_code == 200:
        assert answer.content == data
    elif answer.status_code == 206:
        first, last = re.match(
            r"bytes (\d+)-(\d+)/4096", answer.headers["Content-Range"]
        ).groups()
        assert answer.content == data[int(first):int(last) + 1]
    else:
        assert answer.headers["Content-Range"] == "bytes */4096"


def test_unsatisfiable_huge_start_is_416(server, sentinel):
    """A range starting past the end is 416 with the size."""
    record = sentinel[0]
    answer = server.get(
        record["links"]["content"], headers={"Range": "bytes=10000000000-"}
    )
    assert_refused(answer, 416, "range_not_satisfiable")
    assert answer.headers["Content-Range"] == "bytes */4096"


def test_bad_cursors_and_limits_are_refused(server, sentinel):
    """Tampered, truncated and foreign cursors and odd limits answer 400."""
    for index in range(3):
        server.upload(os.urandom(10), name=f"page-{index}")

    first = server.get("/api/v1/files", params={"limit": 1}).json()
    cursor = first["next_cursor"]
    assert cursor
    flipped = cursor[:-3] + ("A" if cursor[-3] != "A" else "B") + cursor[-2:]
    payload, _, signature = cursor.rpartition(".")
    foreign = URLSafeSerializer("another-key", salt="orb.files.v1").dumps(
        [
            "2020-01-01T00:00:00+00:00",
            "00000000-0000-4000-8000-000000000000",
            [None, None, None],
        ]
    )
    unsigned_swap = payload[::-1] + "." + signature
    cases = [
        {"cursor": flipped},
        {"cursor": cursor[: len(cursor) // 2]},
        {"cursor": cursor[:-1]},
        {"cursor": foreign},
        {"cursor": unsigned_swap},
        {"cursor": "x" * 5000},
        {"cursor": "\u202e"},
        {"cursor": cursor, "prefix": "page-"},
        {"cursor": cursor, "sha256": "0" * 64},
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "abc"},
        {"limit": "1e3"},
        {"limit": "99999999999999999999"},
        {"limit": " 5"},
        {"sha256": "zz"},
        {"prefix": "a\x00"},
    ]
    for params in cases:
        answer = server.get("/api/v1/files", params=params)
        assert_refused(answer, 400, "invalid_parameter")

    again = server.get("/api/v1/files", params={"limit": 1, "cursor": cursor})
    assert again.status_code == 200


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(65)},
        {"big": "x" * 1025},
        {"big": "é" * 513},
        {"nested": {"a": "b"}},
        {"number": 1},
        {"flag": True},
        {"nothing": None},
        {"list": ["a"]},
        {"bad key": "v"},
        {"k" * 65: "v"},
        {"": "v"},
        ["not", "an", "object"],
        "a string",
    ],
)
def test_bad_metadata_is_refused(server, sentinel, metadata):
    """Too many keys, huge values, nesting and non-strings answer 400."""
    before = server.snapshot()
    answer = server.post(
        "/api/v1/files",
        files={"file": ("m.bin", b"data")},
        data={"metadata": json.dumps(metadata)},
    )
    assert_refused(answer, 400, "invalid_metadata")
    if isinstance(metadata, dict) and None not in metadata.values():
        record = sentinel[0]
        answer = server.patch(
            record["links"]["self"], json={"metadata": metadata}
        )
        assert_refused(answer, 400, "invalid_metadata")

    assert server.snapshot() == before
    assert server.get(sentinel[0]["links"]["self"]).json()["metadata"] == {}


def test_metadata_headers_are_checked(server, sentinel):
    """X-Orb-Meta headers with a bad key or a huge value answer 400."""
    before = server.snapshot()
    for headers in (
        {"X-Orb-Meta-bad key": "v"},
        {"X-Orb-Meta-big": "x" * 1025},
        {f"X-Orb-Meta-{'k' * 65}": "v"},
    ):
        answer = server.upload(b"data", headers=headers)
        assert answer.status_code == 400, answer.text

    too_many = {f"X-Orb-Meta-k{i}": "v" for i in range(65)}
    answer = server.upload(b"data", headers=too_many)
    assert answer.status_code in (400, 431), answer.text
    assert server.snapshot() == before


@pytest.mark.parametrize(
    "body, content_type, status, code",
    [
        (b"[]", "application/json", 400, "invalid_patch"),
        (b'"name"', "application/json", 400, "invalid_patch"),
        (b"null", "application/json", 400, "invalid_patch"),
        (b"42", "application/merge-patch+json", 400, "invalid_patch"),
        (b"{", "application/json", 400, "invalid_json"),
        (b"\xff\xfe{}", "application/json", 400, "invalid_json"),
        (b'{"name": "a"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"name": "a"}', "application/x-www-form-urlencoded", 415, None),
        (b'{"name": "a"}', "", 415, "unsupported_media_type"),
        (b'{"size": 1}', "application/json", 400, "invalid_patch"),
        (b'{"sha256": "00"}', "application/json", 400, "invalid_patch"),
        (b'{"name": null}', "application/json", 400, "invalid_name"),
        (b'{"name": 5}', "application/json", 400, "invalid_name"),
        (b'{"metadata": []}', "application/json", 400, "invalid_metadata"),
        (b'{"metadata": "x"}', "application/json", 400, "invalid_metadata"),
        (b'{"name": "' + b"a" * 300_000 + b'"}', "application/json", 413,
         "too_large"),
    ],
)
def test_bad_patch_bodies_are_refused(
    server, sentinel, body, content_type, status, code
):
    """PATCH bodies that are not objects, JSON or allowed are refused."""
    record = sentinel[0]
    before = server.get(record["links"]["self"]).json()
    headers = {"Content-Type": content_type} if content_type else {}
    answer = server.patch(record["links"]["self"], data=body, headers=headers)
    assert_refused(answer, status, code)
    assert server.get(record["links"]["self"]).json() == before


def raw_upload(port: int, headers: list[str], body: bytes) -> bytes:
    """Send a raw POST /api/v1/files with exactly these header lines."""
    head = "POST /api/v1/files?name=raw.bin HTTP/1.1\r\nHost: orb\r\n"
    head += "".join(f"{line}\r\n" for line in headers)
    return exchange(port, head.encode("latin-1") + b"\r\n" + body)


@pytest.mark.parametrize(
    "headers, body",
    [
        (["Content-Length: 5", "Content-Length: 5"], b"hello"),
        (["Content-Length: 5", "Content-Length: 6"], b"hello!"),
        (["Content-Length: 5, 5"], b"hello"),
        (["Content-Length: 5", "Transfer-Encoding: chunked"],
         b"5\r\nhello\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked", "Content-Length: 5"],
         b"5\r\nhello\r\n0\r\n\r\n"),
        (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
         b"5\r\nhello\r\n0\r\n\r\n"),
        (["Transfer-Encoding: gzip, chunked"], b"5\r\nhello\r\n0\r\n\r\n"),
        (["Transfer-Encoding: identity"], b"hello"),
        (["Transfer-Encoding: gzip"], b"hello"),
        (["Content-Length: -5"], b"hello"),
        (["Content-Length: +5"], b"hello"),
        (["Content-Length: 0x5"], b"hello"),
        (["Content-Length : 5"], b"hello"),
        (["Content-Length:\t5\x00"], b"hello"),
    ],
)
def test_conflicting_framing_is_refused(server, sentinel, headers, body):
    """Duplicate or conflicting length headers answer 4xx/501; nothing kept."""
    before = server.snapshot()
    answer = raw_upload(server.port, headers, body)
    assert 400 <= status_of(answer) < 500 or status_of(answer) == 501, answer
    assert headers_of(answer)["content-type"] == "application/problem+json"
    assert json_of(answer)["status"] == status_of(answer)
    assert server.snapshot() == before


def test_slow_clients_free_their_threads(make_server):
    """Clients that trickle headers or a body are cut off after the timeout.

    Four stalled clients hold every thread of the only worker; the timeout
    frees them, so a fifth client is served, and the stalled upload leaves
    nothing behind.
    """
    orb = make_server(ORB_CLIENT_TIMEOUT="2", ORB_WORKERS="1", ORB_THREADS="2")
    before = orb.snapshot()
    stalled = []
    for index in range(4):
        sock = socket.create_connection(("127.0.0.1", orb.port), timeout=60)
        if index % 2:
            sock.sendall(b"POST /api/v1/files?name=slow HTTP/1.1\r\nHost: o")
        else:
            sock.sendall(
                b"POST /api/v1/files?name=slow HTTP/1.1\r\nHost: orb\r\n"
                b"Content-Length: 100000\r\n\r\n" + b"x" * 5000
            )
        stalled.append(sock)

    health = orb.get("/health")
    assert health.status_code == 200

    answers = [read_answer(sock) for sock in stalled]
    for sock in stalled:
        sock.close()

    for index, answer in enumerate(answers):
        if index % 2 == 0:
            assert status_of(answer) == 408, answer
            assert json_of(answer)["code"] == "request_timeout"
        else:
            assert answer == b"" or status_of(answer) in (400, 408), answer

    wait_until(lambda: orb.snapshot() == before, 30, what="nothing kept")
    assert "Traceback" not in orb.log_text()
