"""Bearer tokens for the files API, when ORB_API_TOKENS asks for them.

Every `/api/v1/files` request then needs `Authorization: Bearer <token>`.
A read token may GET and HEAD; a write token may also POST, PATCH and
DELETE. Tokens are compared in constant time and never logged: only the
name of the token that made a change goes into the log.
"""

import hmac
import logging

from flask import Flask
from flask import Response
from flask import current_app
from flask import g
from flask import request

from .config import ApiToken
from .problems import Problem

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/api/v1/files"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def register_auth(app: Flask) -> None:
    """Check tokens before files requests; log who changed what."""
    app.before_request(check_token)
    app.after_request(log_write)


def protected(path: str) -> bool:
    """Tell whether a request path needs a token."""
    return path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")


def check_token() -> None:
    """Refuse a files request without a valid token of enough scope."""
    tokens = current_app.config["ORB_SETTINGS"].api_tokens
    if not tokens or not protected(request.path):
        return

    presented = _bearer(request.headers.get("Authorization", ""))
    token = find_token(tokens, presented) if presented else None
    if token is None:
        error = ', error="invalid_token"' if presented else ""
        raise Problem(
            401,
            "unauthorized",
            "Send Authorization: Bearer <token> with a valid token.",
            {"WWW-Authenticate": f'Bearer realm="orb"{error}'},
        )

    if request.method not in READ_METHODS and token.scope != "write":
        raise Problem(
            403,
            "forbidden",
            "This token may read files but not change them.",
        )

    g.orb_token_name = token.name


def find_token(
    tokens: tuple[ApiToken, ...], presented: str
) -> ApiToken | None:
    """Return the token matching `presented`, comparing every one."""
    wanted = presented.encode("utf-8", "surrogateescape")
    found = None
    for token in tokens:
        if hmac.compare_digest(token.token.encode("utf-8"), wanted):
            found = token

    return found


def log_write(response: Response) -> Response:
    """Log the name of the token behind a change."""
    name = g.get("orb_token_name")
    if name and request.method not in READ_METHODS:
        log.info(
            "Token %s: %s %s answered %d",
            name,
            request.method,
            request.path,
            response.status_code,
        )

    return response


def _bearer(header: str) -> str:
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""

    return credentials.strip()
