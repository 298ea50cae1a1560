"""The files blueprint: upload, list, read, relabel, delete and download."""

import json
import re
import uuid

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import jsonify
from flask import request
from werkzeug.http import parse_options_header

from . import catalog
from . import listing
from .content import etag_of
from .content import serve_content
from .cursors import decode_cursor
from .cursors import encode_cursor
from .models import file_json
from .problems import Problem
from .uploads import receive_upload

bp = Blueprint("files", __name__, url_prefix="/api/v1/files")

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_PATCH_BYTES = 256 * 1024
_LIMIT_RE = re.compile(r"^[0-9]{1,4}$")
_PATCH_TYPES = ("application/json", "application/merge-patch+json")


@bp.post("")
def create_file() -> Response:
    """Store an uploaded file and answer 201 with its record."""
    settings = current_app.config["ORB_SETTINGS"]
    upload = receive_upload(
        request, catalog.blob_store(), settings.max_upload_bytes
    )
    record = catalog.add_file(upload)
    response = jsonify(record.to_json())
    response.status_code = 201
    response.headers["Location"] = record.to_json()["links"]["self"]
    response.headers["ETag"] = etag_of(record)
    return response


@bp.get("")
def list_files() -> Response:
    """List records newest first, one keyset page at a time."""
    args = request.args
    limit = _limit(args.get("limit"))
    filters = [args.get("prefix"), args.get("sha256"), args.get("content_type")]
    prefix, sha256, content_type = filters
    if sha256 is not None:
        sha256 = sha256.lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise Problem(
                400,
                "invalid_parameter",
                "sha256 must be 64 hexadecimal characters.",
            )

    for name, value in (("prefix", prefix), ("content_type", content_type)):
        if value is not None and (len(value) > 1024 or "\x00" in value):
            raise Problem(400, "invalid_parameter", f"{name} is not valid.")

    after = None
    if args.get("cursor"):
        after = decode_cursor(args["cursor"], filters)

    items, last = listing.fetch_page(
        limit, after, prefix, sha256, content_type
    )
    next_cursor = encode_cursor(*last, filters) if last else None
    body = (
        f'{{"items":[{",".join(items)}],'
        f'"next_cursor":{json.dumps(next_cursor)}}}'
    )
    return Response(body, mimetype="application/json")


@bp.get("/<file_id>")
def get_file(file_id: str) -> Response:
    """Answer one file record."""
    record = catalog.get_file(_parse_id(file_id))
    response = jsonify(file_json(record))
    response.headers["ETag"] = etag_of(record)
    return response


@bp.patch("/<file_id>")
def patch_file(file_id: str) -> Response:
    """Rename or relabel a file with a JSON merge patch."""
    parsed_id = _parse_id(file_id)
    patch = _merge_patch_body()
    record = catalog.update_file(parsed_id, patch)
    response = jsonify(record.to_json())
    response.headers["ETag"] = etag_of(record)
    return response


@bp.delete("/<file_id>")
def delete_file(file_id: str) -> Response:
    """Delete a file record (and its blob once unused)."""
    catalog.delete_file(_parse_id(file_id))
    return Response(status=204)


@bp.route("/<file_id>/content", methods=["GET", "HEAD"])
def get_content(file_id: str) -> Response:
    """Send a file's bytes, whole or by range, honouring conditionals."""
    record = catalog.get_file(_parse_id(file_id))
    return serve_content(request, record, catalog.blob_store())


def _parse_id(raw: str) -> uuid.UUID:
    try:
        parsed = uuid.UUID(raw)
    except ValueError:
        parsed = None

    if parsed is None or str(parsed) != raw.lower():
        raise Problem(
            400, "invalid_id", "A file id is a UUID in canonical form."
        )

    return parsed


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT

    if not _LIMIT_RE.match(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise Problem(
            400,
            "invalid_parameter",
            f"limit must be a whole number from 1 to {MAX_LIMIT}.",
        )

    return int(raw)


def _merge_patch_body() -> dict:
    mimetype, _ = parse_options_header(request.headers.get("Content-Type", ""))
    if mimetype not in _PATCH_TYPES:
        raise Problem(
            415,
            "unsupported_media_type",
            "Send application/json or application/merge-patch+json.",
        )

    if (request.content_length or 0) > MAX_PATCH_BYTES:
        raise Problem(413, "too_large", "The patch body is too large.")

    raw = request.stream.read(MAX_PATCH_BYTES + 1)
    if len(raw) > MAX_PATCH_BYTES:
        raise Problem(413, "too_large", "The patch body is too large.")

    try:
        patch = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, "invalid_json", "The body is not valid JSON.") from None

    if not isinstance(patch, dict):
        raise Problem(400, "invalid_patch", "The patch must be a JSON object.")

    unknown = set(patch) - {"name", "metadata"}
    if unknown:
        raise Problem(
            400,
            "invalid_patch",
            f"Only name and metadata can change, not {sorted(unknown)[0]}.",
        )

    if patch.get("name", "") is None:
        raise Problem(400, "invalid_name", "A file must keep a name.")

    return patch
