"""RFC 9457 problem documents: the one way Orb answers with an error."""

import json
import logging
from http import HTTPStatus

from flask import Flask
from flask import Response
from sqlalchemy.exc import InterfaceError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from .storage import StorageFull

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    411: "length_required",
    412: "precondition_failed",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    431: "request_header_fields_too_large",
    500: "internal_error",
    503: "service_unavailable",
    507: "insufficient_storage",
}


class Problem(Exception):
    """An error answer: raise it anywhere in a request to send it."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def problem_response(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """Build an `application/problem+json` response."""
    title = _title(status)
    body = {
        "type": f"https://lunaricorn.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    response = Response(
        json.dumps(body), status=status, mimetype=PROBLEM_TYPE
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value

    return response


def register_error_handlers(app: Flask) -> None:
    """Route every error through `problem_response`."""
    app.register_error_handler(Problem, _from_problem)
    app.register_error_handler(HTTPException, _from_http_exception)
    app.register_error_handler(StorageFull, _from_storage_full)
    app.register_error_handler(OperationalError, _from_database_error)
    app.register_error_handler(PoolTimeout, _from_database_error)
    app.register_error_handler(InterfaceError, _from_database_error)
    app.register_error_handler(Exception, _from_unexpected)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _from_problem(error: Problem) -> Response:
    return problem_response(
        error.status, error.code, error.detail, error.headers
    )


def _from_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    code = _CODES_BY_STATUS.get(status, "http_error")
    headers = {}
    if status == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)

    detail = error.description or _title(status)
    return problem_response(status, code, detail, headers)


def _from_storage_full(error: StorageFull) -> Response:
    log.error("Storage is full: %s", error.strerror)
    return problem_response(
        507, "insufficient_storage", "The file store has no space left."
    )


def _from_database_error(error: Exception) -> Response:
    log.error("Database unavailable: %s", type(error).__name__)
    return problem_response(
        503,
        "database_unavailable",
        "The database is not reachable; try again shortly.",
        {"Retry-After": "5"},
    )


def _from_unexpected(error: Exception) -> Response:
    log.exception("Unhandled error: %s", type(error).__name__)
    return problem_response(
        500, "internal_error", "An unexpected error occurred."
    )
