"""Talk HTTP/1.1 over a raw socket, for requests no client library sends."""

import json
import socket


def exchange(port: int, raw: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes, then read until the server closes or stops talking."""
    address = ("127.0.0.1", port)
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(raw)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> bytes:
    """Read one answer: headers, then Content-Length bytes (or until EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = _recv(sock)
        if not chunk:
            return data
        data += chunk

    head, _, body = data.partition(b"\r\n\r\n")
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())

    while length is not None and len(body) < length:
        chunk = _recv(sock)
        if not chunk:
            break
        body += chunk

    return head + b"\r\n\r\n" + body


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def status_of(answer: bytes) -> int:
    """Return the status code of a raw answer (0 when there is none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def headers_of(answer: bytes) -> dict[str, str]:
    """Return the headers of a raw answer, names lowercased."""
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    headers = {}
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()

    return headers


def json_of(answer: bytes) -> dict:
    """Return the JSON body of a raw answer."""
    return json.loads(answer.partition(b"\r\n\r\n")[2])
