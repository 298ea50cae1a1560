"""Pages of file records, newest first, by keyset.

On PostgreSQL the database renders each record's JSON (json_build_object),
so a page of a hundred costs Python little more than joining strings; on
SQLite each row goes through `models.file_json`. Both renderings answer the
same integration tests, and a test compares them record by record.
"""

import json
import uuid
from datetime import datetime

from sqlalchemy import Select
from sqlalchemy import Text
from sqlalchemy import cast
from sqlalchemy import func
from sqlalchemy import literal
from sqlalchemy import select
from sqlalchemy import tuple_

from .catalog import read_connection
from .models import FILE_COLUMNS
from .models import FileRecord
from .models import file_json

RFC3339_UTC = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'

Position = tuple[datetime, uuid.UUID]


def fetch_page(
    limit: int,
    after: Position | None,
    prefix: str | None,
    sha256: str | None,
    content_type: str | None,
) -> tuple[list[str], Position | None]:
    """Return up to `limit` records as JSON texts, and the next position."""
    query = page_query(limit + 1, after, prefix, sha256, content_type)
    with read_connection() as connection:
        if connection.dialect.name == "postgresql":
            items = list(connection.scalars(_rendered_by_database(query)))
        else:
            items = [_render(row) for row in connection.execute(query)]

    if len(items) <= limit:
        return items, None

    items = items[:limit]
    last = json.loads(items[-1])
    return items, (datetime.fromisoformat(last["created_at"]), uuid.UUID(last["id"]))


def page_query(
    limit: int,
    after: Position | None,
    prefix: str | None,
    sha256: str | None,
    content_type: str | None,
) -> Select:
    """Return the filtered, ordered, limited select of FILE_COLUMNS."""
    query = select(*FILE_COLUMNS)
    if prefix:
        escaped = (
            prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        )
        query = query.where(FileRecord.name.like(f"{escaped}%", escape="\\"))

    if sha256:
        query = query.where(FileRecord.sha256 == sha256)

    if content_type:
        query = query.where(FileRecord.content_type == content_type)

    if after is not None:
        query = query.where(
            tuple_(FileRecord.created_at, FileRecord.id) < after
        )

    return query.order_by(
        FileRecord.created_at.desc(), FileRecord.id.desc()
    ).limit(limit)


def _render(row) -> str:
    return json.dumps(file_json(row), separators=(",", ":"))


def _rendered_by_database(query: Select) -> Select:
    page = query.subquery()
    location = literal("/api/v1/files/", Text) + cast(page.c.id, Text)
    record = func.json_build_object(
        "id", page.c.id,
        "name", page.c.name,
        "size", page.c.size,
        "content_type", page.c.content_type,
        "sha256", page.c.sha256,
        "metadata", page.c.meta,
        "created_at", _rfc3339(page.c.created_at),
        "updated_at", _rfc3339(page.c.updated_at),
        "links", func.json_build_object(
            "self", location,
            "content", location + literal("/content", Text),
        ),
    )
    return select(cast(record, Text)).order_by(
        page.c.created_at.desc(), page.c.id.desc()
    )


def _rfc3339(column):
    return func.to_char(func.timezone("UTC", column), RFC3339_UTC)
