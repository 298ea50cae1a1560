"""Database records: file records and the content blobs they point to."""

import uuid
from datetime import datetime
from datetime import timezone

from sqlalchemy import JSON
from sqlalchemy import BigInteger
from sqlalchemy import DateTime
from sqlalchemy import ForeignKey
from sqlalchemy import Index
from sqlalchemy import Integer
from sqlalchemy import String
from sqlalchemy import TypeDecorator
from sqlalchemy import Uuid
from sqlalchemy.orm import Mapped
from sqlalchemy.orm import mapped_column

from .extensions import db


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


class UtcDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None

        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)

        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None

        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)

        return value.astimezone(timezone.utc)


class Blob(db.Model):
    """Stored bytes, once per distinct sha256."""

    __tablename__ = "orb_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FileRecord(db.Model):
    """A named, labelled file whose bytes live in a `Blob`."""

    __tablename__ = "orb_files"
    __table_args__ = (
        Index("ix_orb_files_created_id", "created_at", "id"),
        Index(
            "ix_orb_files_name",
            "name",
            postgresql_ops={"name": "text_pattern_ops"},
        ),
        Index("ix_orb_files_sha256", "sha256"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, default=uuid.uuid4
    )
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey("orb_blobs.sha256")
    )
    meta: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    def to_json(self) -> dict:
        """Return the record as API.md describes it."""
        return file_json(self)


# The columns of a file record, selectable without building ORM objects.
FILE_COLUMNS = (
    FileRecord.id,
    FileRecord.name,
    FileRecord.size,
    FileRecord.content_type,
    FileRecord.sha256,
    FileRecord.meta.label("meta"),
    FileRecord.created_at,
    FileRecord.updated_at,
)


def file_json(record) -> dict:
    """Return a file record (model or row of FILE_COLUMNS) as API.md says."""
    location = f"/api/v1/files/{record.id}"
    return {
        "id": str(record.id),
        "name": record.name,
        "size": record.size,
        "content_type": record.content_type,
        "sha256": record.sha256,
        "metadata": dict(record.meta or {}),
        "created_at": rfc3339(record.created_at),
        "updated_at": rfc3339(record.updated_at),
        "links": {"self": location, "content": f"{location}/content"},
    }


class OutboxEvent(db.Model):
    """A Signaling event, written in the transaction of its change.

    `id` orders delivery. On PostgreSQL two transactions could take ids in
    one order and commit in the other, so a dispatcher reading "pending,
    by id" might deliver 6 before 5 becomes visible. `events.record` takes
    a transaction-long advisory lock before inserting, so from the insert
    (which takes the id) to the commit only one writer holds the outbox:
    ids are handed out in commit order. The lock covers only the last
    moments of a change, after its bytes are on disk. SQLite starts every
    write transaction IMMEDIATE, which gives the same order for free.
    """

    __tablename__ = "orb_events"
    __table_args__ = (
        Index("ix_orb_events_status_id", "status", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 UTC with a Z suffix."""
    text = moment.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")
