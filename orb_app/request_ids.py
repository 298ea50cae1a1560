"""Give every request an id, returned in `X-Request-ID` and logged.

A valid id sent by the client (1-128 of A-Z a-z 0-9 . _ -) is kept, so a
caller can follow its own id through the cluster; anything else is
replaced by a new one. The id is in the WSGI environ under
`orb.request_id`, in the response header that gunicorn's access log
prints, and on every log record written while the request runs.
"""

import contextvars
import logging
import re
import uuid

HEADER = "X-Request-ID"
ENVIRON_KEY = "orb.request_id"
ACCESS_ATOM = "{x-request-id}o"

_VALID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_current: contextvars.ContextVar[str] = contextvars.ContextVar(
    "orb_request_id", default="-"
)


def request_id_from(value: str | None) -> str:
    """Return `value` when it is a valid request id, else a new one."""
    if value and _VALID.match(value):
        return value

    return uuid.uuid4().hex


def current_request_id() -> str:
    """Return the id of the request this thread serves, or "-"."""
    return _current.get()


class RequestIdMiddleware:
    """WSGI middleware that assigns the id and adds it to the response."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        request_id = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        environ[ENVIRON_KEY] = request_id
        token = _current.set(request_id)

        def start(status, headers, exc_info=None):
            headers = [
                (name, value)
                for name, value in headers
                if name.lower() != HEADER.lower()
            ]
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Put the request id on each record as `request_id`.

    gunicorn writes its access line after the request has left the
    application, so for those records the id is taken from the line's
    response-header atoms instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "request_id"):
            return True

        request_id = _current.get()
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            request_id = record.args.get(ACCESS_ATOM, request_id)

        record.request_id = request_id
        return True
