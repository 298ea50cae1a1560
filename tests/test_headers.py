"""Security headers on every answer; error bodies that reveal nothing."""

import os

from orbserver import ROOT
from rawhttp import exchange
from rawhttp import headers_of
from rawhttp import status_of

LEAKS = ("Traceback", 'File "', "sqlalche", "psycopg", "sqlite3",
         "SELECT ", "INSERT ", "UPDATE ", "/tmp/", str(ROOT), "gunicorn",
         "werkzeug", "flask", "Exception", "Error:")


def assert_no_leak(text: str, storage_dir) -> None:
    """Assert a body holds no trace, SQL, server name or path."""
    for marker in (*LEAKS, str(storage_dir)):
        assert marker.lower() not in text.lower(), (marker, text)


def test_every_answer_has_security_headers_and_no_banner(server):
    """Good and bad answers carry nosniff; Server names no software."""
    created = server.upload(os.urandom(100), name="h.bin").json()
    missing = "/api/v1/files/00000000-0000-4000-8000-000000000000"
    answers = [
        server.get("/"),
        server.get("/health"),
        server.get("/ready"),
        server.get("/status"),
        server.get("/api/v1/openapi.json"),
        server.get("/api/v1/files"),
        server.get(created["links"]["self"]),
        server.get(created["links"]["content"]),
        server.head(created["links"]["content"]),
        server.get(
            created["links"]["content"], headers={"Range": "bytes=1-2"}
        ),
        server.get("/nowhere"),
        server.get(missing),
        server.get("/api/v1/files/../../etc/passwd"),
        server.post("/health"),
        server.delete("/api/v1/files"),
        server.patch(missing, json={}),
    ]
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers.get("Server", "orb") == "orb"
        if answer.status_code >= 400:
            assert answer.headers["Content-Type"] == "application/problem+json"
            assert_no_leak(answer.text, server.storage_dir)


def test_errors_gunicorn_answers_itself_are_problems(server):
    """Requests refused before Flask sees them get problem documents."""
    raw_requests = [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: orb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: orb\r\nX: " + b"b" * 9000 + b"\r\n\r\n",
        b"BREW\x00 / HTTP/1.1\r\nHost: orb\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: orb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: orb\r\nBad Header: x\r\n\r\n",
        b"POST /api/v1/files?name=x HTTP/1.1\r\nHost: orb\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: orb\r\n"
        + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
    ]
    for raw in raw_requests:
        answer = exchange(server.port, raw)
        status = status_of(answer)
        assert 400 <= status < 600 and status != 500, answer[:300]
        headers = headers_of(answer)
        assert headers["content-type"] == "application/problem+json", answer
        assert headers["x-content-type-options"] == "nosniff"
        assert "gunicorn" not in answer.decode("latin-1").lower()
        assert_no_leak(
            answer.partition(b"\r\n\r\n")[2].decode("utf-8", "replace"),
            server.storage_dir,
        )
