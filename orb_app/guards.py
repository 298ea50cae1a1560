"""Guards on every answer: security headers and slow-client time-outs.

The time-out itself is a socket option that gunicorn's listening socket
hands to every connection (see `limit_client_reads`): a read that waits
longer than ORB_CLIENT_TIMEOUT seconds fails, so a client that trickles
its headers or body frees its worker thread. Here such a failure becomes
a 408 problem.
"""

import json
import logging
import socket
import struct

from flask import Flask
from flask import Response
from flask import request

from .problems import _CODES_BY_STATUS
from .problems import PROBLEM_TYPE
from .problems import Problem
from .problems import problem_response

log = logging.getLogger(__name__)

_WIRE_CODES = {417: "expectation_failed", 501: "unsupported_transfer_coding"}

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def register_guards(app: Flask) -> None:
    """Add security headers and turn stalled reads into 408 answers."""
    app.before_request(refuse_unknown_transfer_coding)
    app.after_request(add_security_headers)
    app.register_error_handler(TimeoutError, answer_stalled_client)
    app.register_error_handler(BlockingIOError, answer_stalled_client)


def add_security_headers(response: Response) -> Response:
    """Set headers that stop browsers from guessing or framing answers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)

    return response


def refuse_unknown_transfer_coding() -> None:
    """Refuse a body in a transfer coding other than plain chunked."""
    coding = request.headers.get("Transfer-Encoding")
    if coding is not None and coding.strip().lower() != "chunked":
        raise Problem(
            501,
            "unsupported_transfer_coding",
            "Only Transfer-Encoding: chunked is supported.",
        )


def answer_stalled_client(error: OSError) -> Response:
    """Answer 408 to a client that stopped sending in the middle."""
    log.warning("Client went quiet during %s %s", request.method, request.path)
    return client_timeout_response()


def client_timeout_response() -> Response:
    """Build the 408 answer sent when a client stops sending."""
    return problem_response(
        408,
        "request_timeout",
        "The client sent nothing for too long; the request was dropped.",
    )


def stalled(error: BaseException) -> bool:
    """Tell whether a read failed because the client went quiet."""
    return isinstance(error, (TimeoutError, BlockingIOError))


def limit_client_reads(sockets: list, seconds: float) -> None:
    """Make reads on connections accepted by `sockets` time out."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    for listener in sockets:
        raw = getattr(listener, "sock", listener)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)

    log.info("Client reads time out after %gs", seconds)


def hide_server_banner() -> None:
    """Make gunicorn say `Server: orb` instead of its name and version."""
    import gunicorn
    from gunicorn.http import wsgi

    gunicorn.SERVER = wsgi.SERVER = "orb"
    gunicorn.SERVER_SOFTWARE = wsgi.SERVER_SOFTWARE = "orb"


def answer_wire_errors_as_problems() -> None:
    """Make gunicorn's own error answers RFC 9457 problem documents."""
    from gunicorn import util

    util.write_error = write_wire_problem


def write_wire_problem(sock, status: int, reason: str, message: str) -> None:
    """Write a problem answer for a request gunicorn refused itself."""
    from gunicorn import util

    code = _CODES_BY_STATUS.get(status) or _WIRE_CODES.get(
        status, "bad_request"
    )
    detail = message[:200] if status < 500 else ""
    body = json.dumps(
        {
            "type": f"https://lunaricorn.dev/problems/{code}",
            "title": reason,
            "status": status,
            "detail": detail or reason,
            "code": code,
        }
    ).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1") + body)
