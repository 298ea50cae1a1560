"""The OpenAPI 3.1 description of Orb's HTTP API, served as JSON.

The document is written here, beside the routes it describes, and tests
prove the two agree: every route of the app is documented with its
methods, and real answers validate against the schemas.
"""


from flask import Blueprint
from flask import Response
from flask import jsonify

from .version import __version__

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

PROBLEM = "application/problem+json"
UUID_PATTERN = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SHA256_PATTERN = "^[0-9a-f]{64}$"
TIMESTAMP = {"type": "string", "format": "date-time", "pattern": "Z$"}
NULLABLE_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
NULLABLE_TEXT = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_COUNT = {"type": ["integer", "null"], "minimum": 0}

PROBLEM_CODES = [
    "bad_request",
    "file_not_found",
    "not_found",
    "invalid_id",
    "invalid_name",
    "invalid_parameter",
    "invalid_metadata",
    "invalid_content_type",
    "invalid_digest",
    "invalid_json",
    "invalid_patch",
    "invalid_multipart",
    "incomplete_body",
    "digest_mismatch",
    "too_large",
    "length_required",
    "unauthorized",
    "forbidden",
    "method_not_allowed",
    "request_timeout",
    "unsupported_transfer_coding",
    "unsupported_media_type",
    "range_not_satisfiable",
    "precondition_failed",
    "insufficient_storage",
    "database_unavailable",
    "blob_missing",
    "blob_corrupt",
    "internal_error",
]


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _response(name: str) -> dict:
    return {"$ref": f"#/components/responses/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None):
    answer = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = headers

    return answer


def _header(name: str) -> dict:
    return {"$ref": f"#/components/headers/{name}"}


SCHEMAS = {
    "Problem": {
        "type": "object",
        "description": "An RFC 9457 problem document.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "code": {
                "type": "string",
                "pattern": "^[a-z][a-z0-9_]*$",
                "description": "A stable snake_case token, for example "
                + ", ".join(PROBLEM_CODES)
                + ".",
            },
        },
    },
    "Metadata": {
        "type": "object",
        "description": "At most 64 keys of [A-Za-z0-9_.-]{1,64}, each a "
        "string of at most 1024 UTF-8 bytes.",
        "maxProperties": 64,
        "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "additionalProperties": {"type": "string"},
    },
    "MetadataPatch": {
        "type": "object",
        "description": "A JSON merge patch (RFC 7396) of the metadata: a "
        "null value deletes its key.",
        "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "additionalProperties": {"type": ["string", "null"]},
    },
    "FileRecord": {
        "type": "object",
        "required": [
            "id",
            "name",
            "size",
            "content_type",
            "sha256",
            "metadata",
            "created_at",
            "updated_at",
            "links",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {
                "type": "string",
                "minLength": 1,
                "description": "A label of 1 to 255 UTF-8 bytes (NFC), "
                "never a path on disk.",
            },
            "size": {"type": "integer", "minimum": 0},
            "content_type": {"type": "string"},
            "sha256": {"type": "string", "pattern": SHA256_PATTERN},
            "metadata": _ref("Metadata"),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "links": {
                "type": "object",
                "required": ["self", "content"],
                "properties": {
                    "self": {"type": "string"},
                    "content": {"type": "string"},
                },
            },
        },
    },
    "FileList": {
        "type": "object",
        "required": ["items", "next_cursor"],
        "additionalProperties": False,
        "properties": {
            "items": {"type": "array", "items": _ref("FileRecord")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on "
                "the last page.",
            },
        },
    },
    "FilePatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "metadata": _ref("MetadataPatch"),
        },
    },
    "MultipartUpload": {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {
                "type": "string",
                "contentMediaType": "application/octet-stream",
                "description": "The file; its filename is the name.",
            },
            "metadata": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "A JSON object of string to string.",
            },
        },
    },
    "Node": {
        "type": "object",
        "required": ["name", "key", "type"],
        "properties": {
            "name": {"type": "string"},
            "key": {"type": "string"},
            "type": {"type": "string"},
            "host": {"type": "string"},
            "port": {"type": "integer"},
        },
    },
    "Identity": {
        "type": "object",
        "required": ["service", "version", "node", "api", "openapi"],
        "properties": {
            "service": {"const": "orb"},
            "version": {"type": "string"},
            "node": _ref("Node"),
            "api": {"const": "/api/v1"},
            "openapi": {"const": "/api/v1/openapi.json"},
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "service", "version", "uptime_s"],
        "properties": {
            "status": {"const": "healthy"},
            "service": {"const": "orb"},
            "version": {"type": "string"},
            "uptime_s": {"type": "number"},
        },
    },
    "Check": {
        "type": "object",
        "required": ["status", "detail"],
        "properties": {
            "status": {"enum": ["pass", "fail"]},
            "detail": {"type": "string"},
            "latency_ms": NULLABLE_NUMBER,
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "checks": {
                "type": "object",
                "additionalProperties": _ref("Check"),
            },
        },
    },
    "Status": {
        "type": "object",
        "required": [
            "service",
            "version",
            "started_at",
            "uptime_s",
            "node",
            "leader",
            "database",
            "storage",
            "signaling",
        ],
        "properties": {
            "service": {"const": "orb"},
            "version": {"type": "string"},
            "started_at": TIMESTAMP,
            "uptime_s": {"type": "number"},
            "node": _ref("Node"),
            "leader": {
                "type": "object",
                "required": ["url", "state"],
                "properties": {
                    "url": NULLABLE_TEXT,
                    "state": {
                        "enum": ["disabled", "waiting", "registered", "lost"]
                    },
                    "registered_at": NULLABLE_TIMESTAMP,
                    "last_heartbeat_at": NULLABLE_TIMESTAMP,
                    "heartbeats_ok": {"type": "integer"},
                    "heartbeats_failed": {"type": "integer"},
                    "last_error": NULLABLE_TEXT,
                },
            },
            "database": {
                "type": "object",
                "required": ["backend", "reachable"],
                "properties": {
                    "backend": {"enum": ["postgresql", "sqlite"]},
                    "reachable": {"type": "boolean"},
                    "latency_ms": NULLABLE_NUMBER,
                    "schema": NULLABLE_TEXT,
                    "revision": NULLABLE_TEXT,
                    "at_head": {"type": "boolean"},
                },
            },
            "storage": {
                "type": "object",
                "required": ["path", "total_bytes", "free_bytes"],
                "properties": {
                    "path": {"type": "string"},
                    "total_bytes": {"type": "integer"},
                    "free_bytes": {"type": "integer"},
                    "files": NULLABLE_COUNT,
                    "blobs": NULLABLE_COUNT,
                    "stored_bytes": NULLABLE_COUNT,
                },
            },
            "signaling": {
                "type": "object",
                "required": ["state"],
                "properties": {
                    "state": {"enum": ["disabled", "connected", "retrying"]},
                    "endpoint": NULLABLE_TEXT,
                    "pending": NULLABLE_COUNT,
                    "delivered": NULLABLE_COUNT,
                    "failed": NULLABLE_COUNT,
                    "last_delivered_at": NULLABLE_TIMESTAMP,
                    "last_error": NULLABLE_TEXT,
                },
            },
        },
    },
}

HEADERS = {
    "ETag": {
        "description": 'Strong entity tag: the sha256 in quotes.',
        "schema": {"type": "string", "pattern": '^"[0-9a-f]{64}"$'},
    },
    "Location": {
        "description": "Where the new record lives.",
        "schema": {"type": "string"},
    },
    "Content-Range": {
        "description": "The range sent, or `bytes */<size>` on 416.",
        "schema": {"type": "string", "pattern": "^bytes "},
    },
    "WWW-Authenticate": {
        "description": "Always a Bearer challenge.",
        "schema": {"type": "string", "pattern": "^Bearer"},
    },
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "string"},
    },
    "Repr-Digest": {
        "description": "RFC 9530 digest of the whole file.",
        "schema": {"type": "string", "pattern": "^sha-256=:"},
    },
    "Last-Modified": {
        "description": "When the file was uploaded (HTTP-date).",
        "schema": {"type": "string"},
    },
    "Content-Disposition": {
        "description": "attachment (or inline with ?inline=1) with an ASCII "
        "filename and a UTF-8 filename*.",
        "schema": {"type": "string", "pattern": "^(attachment|inline);"},
    },
    "Accept-Ranges": {"schema": {"const": "bytes"}},
    "Allow": {
        "description": "The methods the resource supports.",
        "schema": {"type": "string"},
    },
}


def _problem(description: str, headers: dict | None = None) -> dict:
    answer = {
        "description": description,
        "content": {PROBLEM: {"schema": _ref("Problem")}},
    }
    if headers:
        answer["headers"] = headers

    return answer


RESPONSES = {
    "BadRequest": _problem(
        "The request is malformed (code names what is wrong)."
    ),
    "Unauthorized": _problem(
        "No valid bearer token (only when ORB_API_TOKENS is set).",
        {"WWW-Authenticate": _header("WWW-Authenticate")},
    ),
    "Forbidden": _problem("A read token on a writing route."),
    "NotFound": _problem("No file has this id (`file_not_found`)."),
    "MethodNotAllowed": _problem(
        "The method is not supported here.", {"Allow": _header("Allow")}
    ),
    "RequestTimeout": _problem(
        "The client sent nothing for ORB_CLIENT_TIMEOUT seconds."
    ),
    "LengthRequired": _problem(
        "A raw body without Content-Length or chunked encoding."
    ),
    "TooLarge": _problem("The body exceeds the configured limit."),
    "UnsupportedMediaType": _problem("The body's content type is refused."),
    "PreconditionFailed": _problem("If-Match or If-Unmodified-Since failed."),
    "UriTooLong": _problem("The request line is too long."),
    "HeadersTooLarge": _problem("The request headers are too large."),
    "InternalError": _problem(
        "An unexpected fault, or stored bytes that do not match their "
        "record (`blob_missing`, `blob_corrupt`): Orb never sends bytes "
        "that contradict the ETag."
    ),
    "NotImplemented": _problem(
        "A transfer coding other than chunked (`unsupported_transfer_coding`)."
    ),
    "DatabaseUnavailable": _problem(
        "The database is not reachable (`database_unavailable`).",
        {"Retry-After": _header("Retry-After")},
    ),
    "InsufficientStorage": _problem(
        "The disk filled during the upload (`insufficient_storage`)."
    ),
}

COMMON_ERRORS = {
    "400": _response("BadRequest"),
    "408": _response("RequestTimeout"),
    "414": _response("UriTooLong"),
    "431": _response("HeadersTooLarge"),
    "500": _response("InternalError"),
    "501": _response("NotImplemented"),
    "503": _response("DatabaseUnavailable"),
}

FILES_ERRORS = {
    **COMMON_ERRORS,
    "401": _response("Unauthorized"),
    "405": _response("MethodNotAllowed"),
}

WRITE_ERRORS = {**FILES_ERRORS, "403": _response("Forbidden")}

FILE_ID = {
    "name": "file_id",
    "in": "path",
    "required": True,
    "description": "A file id: a UUID in canonical form.",
    "schema": {"type": "string", "pattern": UUID_PATTERN},
}

UPLOAD_HEADERS = [
    {
        "name": "Content-Disposition",
        "in": "header",
        "description": "Raw body: `attachment; filename*=UTF-8''<name>` "
        "names the file (`filename*` wins over `filename`).",
        "schema": {"type": "string"},
    },
    {
        "name": "Content-Digest",
        "in": "header",
        "description": "RFC 9530 `sha-256=:<base64>:`; a mismatch is 400 "
        "`digest_mismatch`.",
        "schema": {"type": "string"},
    },
    {
        "name": "X-Orb-SHA256",
        "in": "header",
        "description": "The sha256 of the body in hex; a mismatch is 400 "
        "`digest_mismatch`.",
        "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
    },
]

CONTENT_HEADERS = [
    ("Range", "One range (`bytes=0-99`, `bytes=-500`, `bytes=100-`) gives "
     "206; several give the whole file with 200; none satisfiable gives "
     "416."),
    ("If-None-Match", "304 when an entity tag matches."),
    ("If-Match", "412 unless an entity tag matches."),
    ("If-Modified-Since", "304 when not modified since (HTTP-date)."),
    ("If-Unmodified-Since", "412 when modified since (HTTP-date)."),
    ("If-Range", "Apply Range only if this entity tag or date matches."),
]

CONTENT_ANSWER_HEADERS = {
    "ETag": _header("ETag"),
    "Repr-Digest": _header("Repr-Digest"),
    "Last-Modified": _header("Last-Modified"),
    "Accept-Ranges": _header("Accept-Ranges"),
    "Content-Disposition": _header("Content-Disposition"),
}


def _content_operation(method: str) -> dict:
    body = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
    if method == "head":
        body = None

    ok = {
        "description": "The whole file (HEAD: its headers only).",
        "headers": CONTENT_ANSWER_HEADERS,
    }
    partial = {
        "description": "One range of the file.",
        "headers": {
            **CONTENT_ANSWER_HEADERS,
            "Content-Range": _header("Content-Range"),
        },
    }
    if body:
        ok["content"] = body
        partial["content"] = body

    return {
        "operationId": f"{method}_content",
        "tags": ["files"],
        "summary": "Download a file's bytes"
        if method == "get"
        else "Read a download's headers",
        "parameters": [
            FILE_ID,
            {
                "name": "inline",
                "in": "query",
                "description": "1 sends Content-Disposition: inline.",
                "schema": {"type": "string"},
            },
            *(
                {
                    "name": name,
                    "in": "header",
                    "description": description,
                    "schema": {"type": "string"},
                }
                for name, description in CONTENT_HEADERS
            ),
        ],
        "responses": {
            "200": ok,
            "206": partial,
            "304": {
                "description": "Not modified.",
                "headers": {"ETag": _header("ETag")},
            },
            **FILES_ERRORS,
            "404": _response("NotFound"),
            "412": _response("PreconditionFailed"),
            "416": _problem(
                "No range is satisfiable.",
                {"Content-Range": _header("Content-Range")},
            ),
        },
    }


def _status_operation(operation_id: str, summary: str, schema: str) -> dict:
    return {
        "get": {
            "operationId": operation_id,
            "tags": ["status"],
            "summary": summary,
            "security": [],
            "responses": {
                "200": _json(_ref(schema), summary),
                **COMMON_ERRORS,
            },
        }
    }


PATHS = {
    "/": _status_operation(
        "show_identity", "Name the service and its API", "Identity"
    ),
    "/health": _status_operation(
        "show_health", "Liveness; checks no dependency", "Health"
    ),
    "/ready": {
        "get": {
            "operationId": "show_readiness",
            "tags": ["status"],
            "summary": "Readiness: database, migrations, storage",
            "security": [],
            "responses": {
                "200": _json(_ref("Readiness"), "Ready to serve files."),
                "503": {
                    "description": "Not ready, or the database is down.",
                    "content": {
                        "application/json": {"schema": _ref("Readiness")},
                        PROBLEM: {"schema": _ref("Problem")},
                    },
                },
                **{
                    code: answer
                    for code, answer in COMMON_ERRORS.items()
                    if code != "503"
                },
            },
        }
    },
    "/status": _status_operation(
        "show_status", "The detailed picture of the node", "Status"
    ),
    "/metrics": {
        "get": {
            "operationId": "show_metrics",
            "tags": ["status"],
            "summary": "Prometheus text exposition over all workers",
            "security": [],
            "responses": {
                "200": {
                    "description": "Metrics in the Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **COMMON_ERRORS,
            },
        }
    },
    "/api/v1/openapi.json": {
        "get": {
            "operationId": "show_openapi",
            "tags": ["status"],
            "summary": "This document",
            "security": [],
            "responses": {
                "200": _json({"type": "object"}, "The OpenAPI document."),
                **COMMON_ERRORS,
            },
        }
    },
    "/api/v1/files": {
        "get": {
            "operationId": "list_files",
            "tags": ["files"],
            "summary": "List files newest first, one page at a time",
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": 1000,
                        "default": 100,
                    },
                },
                {
                    "name": "cursor",
                    "in": "query",
                    "description": "Opaque; next_cursor of the previous page "
                    "with the same filters.",
                    "schema": {"type": "string"},
                },
                {
                    "name": "prefix",
                    "in": "query",
                    "description": "Only names starting with this.",
                    "schema": {"type": "string", "maxLength": 1024},
                },
                {
                    "name": "sha256",
                    "in": "query",
                    "schema": {"type": "string", "pattern": SHA256_PATTERN},
                },
                {
                    "name": "content_type",
                    "in": "query",
                    "schema": {"type": "string", "maxLength": 1024},
                },
            ],
            "responses": {
                "200": _json(_ref("FileList"), "One page of records."),
                **FILES_ERRORS,
            },
        },
        "post": {
            "operationId": "create_file",
            "tags": ["files"],
            "summary": "Upload a file (streamed, hashed, stored once)",
            "description": "Each `X-Orb-Meta-<key>: <value>` header adds "
            "one metadata entry (keys arrive lowercased). Names are 1 to "
            "255 UTF-8 bytes after NFC, without control or bidirectional "
            "override characters.",
            "parameters": [
                {
                    "name": "name",
                    "in": "query",
                    "description": "The name of a raw upload.",
                    "schema": {"type": "string", "minLength": 1},
                },
                *UPLOAD_HEADERS,
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": _ref("MultipartUpload")
                    },
                    "application/octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    },
                    "*/*": {
                        "description": "Any other type: the raw body is the "
                        "file and its Content-Type is stored.",
                        "schema": {"type": "string", "format": "binary"},
                    },
                },
            },
            "responses": {
                "201": _json(
                    _ref("FileRecord"),
                    "Stored.",
                    {"Location": _header("Location"), "ETag": _header("ETag")},
                ),
                **WRITE_ERRORS,
                "411": _response("LengthRequired"),
                "413": _response("TooLarge"),
                "507": _response("InsufficientStorage"),
            },
        },
    },
    "/api/v1/files/{file_id}": {
        "parameters": [FILE_ID],
        "get": {
            "operationId": "get_file",
            "tags": ["files"],
            "summary": "Read one record",
            "responses": {
                "200": _json(
                    _ref("FileRecord"),
                    "The record.",
                    {"ETag": _header("ETag")},
                ),
                **FILES_ERRORS,
                "404": _response("NotFound"),
            },
        },
        "patch": {
            "operationId": "patch_file",
            "tags": ["files"],
            "summary": "Rename or relabel (JSON merge patch)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("FilePatch")},
                    "application/merge-patch+json": {
                        "schema": _ref("FilePatch")
                    },
                },
            },
            "responses": {
                "200": _json(
                    _ref("FileRecord"),
                    "The updated record; the bytes never change.",
                    {"ETag": _header("ETag")},
                ),
                **WRITE_ERRORS,
                "404": _response("NotFound"),
                "413": _response("TooLarge"),
                "415": _response("UnsupportedMediaType"),
            },
        },
        "delete": {
            "operationId": "delete_file",
            "tags": ["files"],
            "summary": "Delete a record (its blob once unused)",
            "responses": {
                "204": {"description": "Deleted."},
                **WRITE_ERRORS,
                "404": _response("NotFound"),
            },
        },
    },
    "/api/v1/files/{file_id}/content": {
        "get": _content_operation("get"),
        "head": _content_operation("head"),
    },
}

DOCUMENT = {
    "openapi": "3.1.0",
    "info": {
        "title": "Orb",
        "version": __version__,
        "summary": "The file-storage node of the Lunaricorn cluster.",
        "description": "Errors are RFC 9457 problem documents with a stable "
        "`code`. A request that fails stores nothing. When ORB_API_TOKENS "
        "is set, every /api/v1/files route needs a bearer token; status "
        "routes stay open.",
    },
    "servers": [{"url": "/"}],
    "tags": [
        {"name": "status", "description": "Identity, liveness, readiness."},
        {"name": "files", "description": "Upload, list, read, download."},
    ],
    "security": [{"bearerAuth": []}, {}],
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "responses": RESPONSES,
        "headers": HEADERS,
        "securitySchemes": {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "`name:token:scope` entries of "
                "ORB_API_TOKENS; a read token may GET and HEAD, a write "
                "token may also POST, PATCH and DELETE.",
            }
        },
    },
}


def flask_path(rule: str) -> str:
    """Turn a Flask rule such as `/files/<file_id>` into an OpenAPI path."""
    return rule.replace("<", "{").replace(">", "}")


@bp.get("/openapi.json")
def show_openapi() -> Response:
    """Serve the OpenAPI document."""
    return jsonify(DOCUMENT)
