"""SIGTERM during long uploads and downloads: finish in time or leave nothing."""

import hashlib
import json
import os
import signal
import socket
import sqlite3
import threading

import pytest
import requests
from orbserver import wait_until

UPLOAD_BYTES = 24 * 1024 * 1024
DOWNLOAD_BYTES = 48 * 1024 * 1024
BLOCK = 256 * 1024
SHUTTING_DOWN = "Worker shutting down"


def start_server(make_server, grace: int, **env):
    """Start a one-worker Orb whose grace period is `grace` seconds."""
    return make_server(
        ORB_WORKERS="1", ORB_GRACEFUL_TIMEOUT=str(grace), **env
    )


def terminate(server) -> None:
    """Send SIGTERM to the master and wait until the worker noticed."""
    os.kill(server.process.pid, signal.SIGTERM)
    wait_until(
        lambda: SHUTTING_DOWN in server.log_text(), 30, what="worker shutdown"
    )


def begin_upload(server, data: bytes) -> socket.socket:
    """Send the head and first blocks of a raw upload of `data`."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    head = (
        "POST /api/v1/files?name=big.bin HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {len(data)}\r\n"
        "Connection: close\r\n\r\n"
    )
    sock.sendall(head.encode("ascii") + data[: 4 * BLOCK])
    wait_until(server.temp_files, 30, what="a pending upload")
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Read until the server closes the connection (or resets it)."""
    chunks = []
    try:
        while chunk := sock.recv(BLOCK):
            chunks.append(chunk)
    except ConnectionResetError:
        pass

    return b"".join(chunks)


def split_response(raw: bytes) -> tuple[int, dict, bytes]:
    """Return status, lowercased headers and body of a raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()

    return int(lines[0].split()[1]), headers, body


def file_rows(server) -> int:
    """Count file records in the server's SQLite database."""
    with sqlite3.connect(server.data_dir / "orb.sqlite3") as connection:
        return connection.execute("SELECT count(*) FROM orb_files").fetchone()[0]


def test_upload_in_flight_finishes_within_the_grace(make_server, leader):
    """A slow upload under way at SIGTERM completes, then Orb exits 0."""
    server = start_server(
        make_server,
        60,
        CLUSTER_LEADER_URL=leader.url,
        LEADER_RETRY_INTERVAL="0.2",
    )
    wait_until(lambda: leader.count() >= 1, 30, what="registration")
    data = os.urandom(UPLOAD_BYTES)
    sock = begin_upload(server, data)
    terminate(server)

    refused: list[BaseException] = []

    def try_new_request() -> None:
        try:
            answer = requests.get(server.url + "/health", timeout=60)
            refused.append(AssertionError(f"served {answer.status_code}"))
        except requests.RequestException as error:
            refused.append(error)

    newcomer = threading.Thread(target=try_new_request)
    newcomer.start()
    for start in range(4 * BLOCK, len(data), BLOCK):
        sock.sendall(data[start : start + BLOCK])
    status, _, body = split_response(read_all(sock))
    sock.close()

    assert status == 201, body
    record = json.loads(body)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert server.process.wait(60) == 0
    newcomer.join(60)
    assert isinstance(refused[0], requests.RequestException), refused
    assert server.blob_files() == [record["sha256"]]
    assert server.temp_files() == []
    assert file_rows(server) == 1
    assert "Leader registrar stopped" in server.log_text()


def test_upload_left_at_the_grace_end_leaves_nothing(make_server):
    """An upload that stalls past the grace is aborted without a trace."""
    server = start_server(make_server, 2)
    sock = begin_upload(server, os.urandom(UPLOAD_BYTES))
    terminate(server)

    assert server.process.wait(60) == 0
    sock.close()
    assert server.temp_files() == []
    assert server.blob_files() == []
    assert file_rows(server) == 0
    assert "Aborting 1 unfinished requests at shutdown" in server.log_text()


def begin_download(server, size: int) -> tuple[socket.socket, bytes, str]:
    """Store `size` random bytes and start reading them slowly."""
    data = os.urandom(size)
    created = server.upload(data, name="large.bin")
    assert created.status_code == 201
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.settimeout(60)
    sock.connect(("127.0.0.1", server.port))
    path = created.json()["links"]["content"]
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Connection: close\r\n\r\n".encode("ascii")
    )
    first = sock.recv(BLOCK)
    assert first.startswith(b"HTTP/1.1 200")
    return sock, data, first


@pytest.mark.parametrize("grace", [60, 2], ids=["finishes", "aborted"])
def test_download_in_flight_at_sigterm(make_server, grace):
    """A slow download finishes within a long grace, is cut after a short one."""
    server = start_server(make_server, grace)
    sock, data, first = begin_download(server, DOWNLOAD_BYTES)
    terminate(server)
    if grace < 10:
        assert server.process.wait(60) == 0

    status, headers, body = split_response(first + read_all(sock))
    sock.close()

    assert status == 200
    assert int(headers["content-length"]) == len(data)
    if grace < 10:
        assert len(body) < len(data)
        assert "Aborting 1 unfinished requests" in server.log_text()
    else:
        assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()
        assert server.process.wait(60) == 0

    assert server.temp_files() == []
    assert server.blob_files() == [hashlib.sha256(data).hexdigest()]
    assert file_rows(server) == 1
