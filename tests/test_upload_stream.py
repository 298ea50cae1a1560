"""Raw uploads received straight from gunicorn's socket, byte-exact."""

import hashlib
import json
import os
import socket

import requests
from orbserver import wait_until


def _exchange(server, raw: bytes, shut_write: bool = False) -> bytes:
    """Send raw bytes on one connection and return all that comes back."""
    with socket.create_connection(("127.0.0.1", server.port), 60) as sock:
        sock.sendall(raw)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)

        received = b""
        while chunk := sock.recv(65536):
            received += chunk

    return received


def _post_head(path: str, length: int, close: bool = False) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/octet-stream",
        f"Content-Length: {length}",
    ]
    if close:
        lines.append("Connection: close")

    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_large_raw_upload_is_byte_exact(server):
    """A multi-megabyte raw body is stored and served back unchanged."""
    data = os.urandom(5 * 1024 * 1024 + 123)
    digest = hashlib.sha256(data).hexdigest()
    created = server.upload(
        data, name="big.bin", headers={"X-Orb-SHA256": digest}
    )
    assert created.status_code == 201, created.text
    assert created.json()["sha256"] == digest
    assert created.json()["size"] == len(data)

    content = server.get(created.json()["links"]["content"])
    assert hashlib.sha256(content.content).hexdigest() == digest


def test_uploads_share_a_keepalive_connection(server):
    """Two raw uploads in a row on one connection both arrive whole."""
    bodies = [os.urandom(3 * 1024 * 1024 + 7), os.urandom(1000)]
    with requests.Session() as session:
        for number, body in enumerate(bodies):
            answer = session.post(
                f"{server.url}/api/v1/files",
                params={"name": f"keepalive-{number}.bin"},
                data=body,
                timeout=60,
            )
            assert answer.status_code == 201, answer.text
            assert answer.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_pipelined_request_after_a_body_is_answered(server):
    """Bytes sent after a body (the next request) are not taken as body.

    The body is read from the socket directly; a request pipelined right
    behind it must be left to gunicorn and answered in turn.
    """
    body = os.urandom(2 * 1024 * 1024 + 5)
    raw = (
        _post_head("/api/v1/files?name=pipelined.bin", len(body))
        + body
        + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\n\r\n"
    )
    answer = _exchange(server, raw)
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 201"), answer[:300]
    assert hashlib.sha256(body).hexdigest().encode() in rest
    assert b"HTTP/1.1 200" in rest


def test_truncated_body_is_refused_and_leaves_nothing(server):
    """A body that ends before its Content-Length stores nothing."""
    before = server.counts()
    raw = (
        _post_head("/api/v1/files?name=cut.bin", 4 * 1024 * 1024, close=True)
        + os.urandom(1024 * 1024 + 3)
    )
    answer = _exchange(server, raw, shut_write=True)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:300]
    problem = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert problem["code"] == "incomplete_body"

    wait_until(lambda: server.temp_files() == [], 30, what="no partial upload")
    assert server.counts() == before


def test_chunked_and_multipart_bodies_still_arrive_whole(server):
    """Bodies without a Content-Length, and multipart ones, are exact.

    They do not take the direct socket path; gunicorn's reader serves them.
    """
    data = os.urandom(3 * 1024 * 1024 + 11)
    digest = hashlib.sha256(data).hexdigest()

    def pieces():
        for start in range(0, len(data), 700_000):
            yield data[start:start + 700_000]

    chunked = server.post(
        "/api/v1/files", params={"name": "chunked.bin"}, data=pieces()
    )
    assert chunked.status_code == 201, chunked.text
    assert chunked.json()["sha256"] == digest

    multipart = server.post(
        "/api/v1/files",
        files={"file": ("multi.bin", data, "application/octet-stream")},
    )
    assert multipart.status_code == 201, multipart.text
    assert multipart.json()["sha256"] == digest
    assert multipart.json()["name"] == "multi.bin"


def test_expect_continue_upload_is_answered(server):
    """A client that waits for 100 Continue (curl does) gets it, then 201."""
    body = os.urandom(2 * 1024 * 1024 + 1)
    head = _post_head("/api/v1/files?name=expect.bin", len(body), close=True)
    head = head[:-2] + b"Expect: 100-continue\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), 60) as sock:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1024)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim

        sock.sendall(body)
        answer = interim.partition(b"\r\n\r\n")[2]
        while chunk := sock.recv(65536):
            answer += chunk

    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]
    assert hashlib.sha256(body).hexdigest().encode() in answer
