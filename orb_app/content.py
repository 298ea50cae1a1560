"""Serve a file's bytes: conditional requests, ranges and sendfile.

Werkzeug's own range support leaves the sendfile path and gets several
RFC 9110 cases wrong, so the decisions are made here and the body is
handed to the server's `wsgi.file_wrapper` positioned at the range start
with an exact `Content-Length`; gunicorn then sends it with sendfile.
"""

import base64
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from flask import Request
from flask import Response
from werkzeug.http import http_date
from werkzeug.http import parse_date
from werkzeug.http import parse_etags
from werkzeug.wsgi import FileWrapper

from .models import FileRecord
from .problems import Problem
from .storage import CHUNK_SIZE
from .storage import BlobStore
from .storage import hash_file

log = logging.getLogger(__name__)

MAX_RANGE_SPECS = 100
# Blobs up to this size are re-hashed before every download, so a corrupt
# one is refused rather than sent; larger ones get a size check (and fsck).
VERIFY_MAX_BYTES = 16 * 1024 * 1024
_RANGE_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
_HUGE = 10**18
_ATTR_CHARS = "!#$&+-.^_`|~"


@dataclass(frozen=True)
class ByteRange:
    """An inclusive byte range of a representation."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    """No range in the Range header overlaps the representation."""


def parse_range(header: str, size: int) -> ByteRange | None:
    """Return the single range to serve, or None to serve everything.

    Raises `Unsatisfiable` when a valid header selects nothing. A header
    that is not a valid `bytes` range set is ignored (RFC 9110 14.2), and
    several ranges are answered with the whole representation.
    """
    unit, _, ranges = header.partition("=")
    if unit.strip().lower() != "bytes" or not ranges.strip():
        return None

    specs = [spec for spec in ranges.split(",") if spec.strip()]
    if not specs or len(specs) > MAX_RANGE_SPECS:
        return None

    satisfiable: list[ByteRange] = []
    for spec in specs:
        match = _RANGE_SPEC.match(spec)
        if match is None or match.group(1) == match.group(2) == "":
            return None

        first, last = (_number(group) for group in match.groups())
        if first is None:
            if last > 0 and size > 0:
                satisfiable.append(ByteRange(max(size - last, 0), size - 1))
            continue

        if last is not None and last < first:
            return None

        if first < size:
            end = size - 1 if last is None else min(last, size - 1)
            satisfiable.append(ByteRange(first, end))

    if not satisfiable:
        raise Unsatisfiable()

    if len(specs) > 1:
        return None

    return satisfiable[0]


def _number(digits: str) -> int | None:
    if not digits:
        return None

    return _HUGE if len(digits) > 18 else int(digits)


def etag_of(record: FileRecord) -> str:
    """Return the strong entity tag of a file's bytes."""
    return f'"{record.sha256}"'


def last_modified_of(record: FileRecord) -> datetime:
    """Return a file's Last-Modified moment at HTTP-date precision."""
    return record.created_at.replace(microsecond=0)


def check_preconditions(
    request: Request, record: FileRecord
) -> Response | None:
    """Evaluate conditional headers in RFC 9110 13.2.2 order."""
    etag = record.sha256
    modified = last_modified_of(record)
    safe = request.method in ("GET", "HEAD")

    if_match = request.headers.get("If-Match")
    if if_match is not None:
        tags = parse_etags(if_match)
        if not (tags.star_tag or tags.contains(etag)):
            raise _precondition_failed()
    else:
        since = parse_date(request.headers.get("If-Unmodified-Since"))
        if since is not None and modified > since:
            raise _precondition_failed()

    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = parse_etags(if_none_match)
        if tags.star_tag or tags.contains_weak(etag):
            if not safe:
                raise _precondition_failed()
            return not_modified(record)
    elif safe:
        since = parse_date(request.headers.get("If-Modified-Since"))
        if since is not None and modified <= since:
            return not_modified(record)

    return None


def range_allowed(request: Request, record: FileRecord) -> bool:
    """Tell whether If-Range (if any) lets a Range header apply."""
    if_range = request.headers.get("If-Range")
    if if_range is None:
        return True

    if_range = if_range.strip()
    if if_range.startswith('"') or if_range.startswith("W/"):
        return if_range == etag_of(record)

    since = parse_date(if_range)
    return since is not None and since == last_modified_of(record)


def representation_headers(record: FileRecord, inline: bool) -> dict:
    """Return the headers every content answer carries."""
    digest = base64.b64encode(bytes.fromhex(record.sha256)).decode("ascii")
    return {
        "ETag": etag_of(record),
        "Last-Modified": http_date(last_modified_of(record)),
        "Accept-Ranges": "bytes",
        "Repr-Digest": f"sha-256=:{digest}:",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
        "Content-Disposition": content_disposition(record.name, inline),
    }


def content_disposition(name: str, inline: bool) -> str:
    """Return a Content-Disposition with ASCII and UTF-8 file names."""
    fallback = (
        unicodedata.normalize("NFKD", name)
        .encode("ascii", "ignore")
        .decode("ascii")
    )
    fallback = "".join(
        char if char.isprintable() and char not in '"\\;/' else "_"
        for char in fallback
    ).strip() or "file"
    encoded = quote(name, safe=_ATTR_CHARS)
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def not_modified(record: FileRecord) -> Response:
    """Build a 304 answer carrying the validators."""
    response = Response(status=304)
    response.headers["ETag"] = etag_of(record)
    response.headers["Last-Modified"] = http_date(last_modified_of(record))
    return response


def serve_content(
    request: Request, record: FileRecord, store: BlobStore
) -> Response:
    """Answer GET or HEAD for a file's bytes."""
    early = check_preconditions(request, record)
    if early is not None:
        return early

    headers = representation_headers(record, request.args.get("inline") == "1")
    byte_range = None
    range_header = request.headers.get("Range")
    if range_header and request.method == "GET" and range_allowed(
        request, record
    ):
        try:
            byte_range = parse_range(range_header, record.size)
        except Unsatisfiable:
            raise Problem(
                416,
                "range_not_satisfiable",
                f"The file is {record.size} bytes long.",
                {"Content-Range": f"bytes */{record.size}"},
            ) from None

    if byte_range is None:
        byte_range = ByteRange(0, record.size - 1)
        status = 200
    else:
        status = 206
        headers["Content-Range"] = (
            f"bytes {byte_range.start}-{byte_range.end}/{record.size}"
        )

    headers["Content-Length"] = str(max(byte_range.length, 0))
    body = () if request.method == "HEAD" else _open_body(
        request, record, store, byte_range
    )
    return Response(
        body,
        status=status,
        headers=headers,
        content_type=record.content_type,
        direct_passthrough=True,
    )


def _open_body(
    request: Request, record: FileRecord, store: BlobStore, part: ByteRange
):
    try:
        handle = store.open(record.sha256)
    except FileNotFoundError:
        raise Problem(
            500, "blob_missing", "The stored bytes of this file are missing."
        ) from None

    if not _intact(handle, record):
        handle.close()
        log.error(
            "Refused to send file %s: blob %s does not match its record",
            record.id,
            record.sha256,
        )
        raise Problem(
            500,
            "blob_corrupt",
            "The stored bytes of this file do not match its record.",
        )

    handle.seek(max(part.start, 0))
    wrapper = request.environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(handle, CHUNK_SIZE)

    return _LimitedFile(handle, max(part.length, 0))


def _intact(handle, record: FileRecord) -> bool:
    """Check a blob's size, and for a small one its sha256 too."""
    if os.fstat(handle.fileno()).st_size != record.size:
        return False

    if record.size > VERIFY_MAX_BYTES:
        return True

    intact = hash_file(handle) == record.sha256
    handle.seek(0)
    return intact


class _LimitedFile(FileWrapper):
    """Iterate at most `remaining` bytes of a file (servers without sendfile)."""

    def __init__(self, handle, remaining: int) -> None:
        super().__init__(handle, CHUNK_SIZE)
        self.remaining = remaining

    def __next__(self) -> bytes:
        if self.remaining <= 0:
            raise StopIteration()

        data = self.file.read(min(self.buffer_size, self.remaining))
        if not data:
            raise StopIteration()

        self.remaining -= len(data)
        return data


def _precondition_failed() -> Problem:
    return Problem(
        412, "precondition_failed", "A precondition in the request failed."
    )
