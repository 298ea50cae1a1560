"""Small assertions and raw-socket helpers shared by the test modules."""

import socket

import requests

PROBLEM_TYPE = "application/problem+json"


def assert_problem(
    response: requests.Response, status: int, code: str
) -> dict:
    """Assert an RFC 9457 problem answer with this status and code."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith(PROBLEM_TYPE)
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["title"] and body["detail"] and body["type"]
    return body


def raw_exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes to 127.0.0.1:port and return the whole answer."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout
    ) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks) and _complete(b"".join(chunks)):
                break

    return b"".join(chunks)


def _complete(answer: bytes) -> bool:
    head, _, body = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)

    return False


def status_of(answer: bytes) -> int:
    """Return the status code of a raw HTTP answer."""
    return int(answer.split(b" ", 2)[1])
