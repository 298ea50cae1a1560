"""Changes to file records and blobs, each in one database transaction.

A blob's row and its file on disk change together under a per-blob lock,
so an upload and a delete of the same bytes can never leave a record that
points at a missing blob, or a blob with no record.
"""

import logging
import uuid
from collections.abc import Callable

from flask import current_app
from sqlalchemy import Connection
from sqlalchemy import Engine
from sqlalchemy import Row
from sqlalchemy import Uuid
from sqlalchemy import bindparam
from sqlalchemy import create_engine
from sqlalchemy import delete
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from . import events
from .database import engine_options
from .extensions import db
from .labels import clean_name
from .labels import merge_metadata
from .models import FILE_COLUMNS
from .models import Blob
from .models import FileRecord
from .models import utcnow
from .problems import Problem
from .storage import BlobStore
from .uploads import Upload

log = logging.getLogger(__name__)

# Checks a locked record before a change; raises a Problem to refuse it.
Precondition = Callable[[FileRecord], None]


def blob_store() -> BlobStore:
    """Return the blob store of the current app."""
    return current_app.extensions["orb.store"]


def lock_blob(sha256: str) -> None:
    """Hold a transaction-long lock on one blob's sha256 (PostgreSQL)."""
    if db.session.get_bind().dialect.name != "postgresql":
        return

    key = int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True)
    db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def add_file(upload: Upload) -> FileRecord:
    """Publish an upload's blob and record it, or leave nothing behind."""
    store = blob_store()
    session = db.session
    created_blob = False
    published = False
    try:
        lock_blob(upload.sha256)
        created_blob = _insert_blob(upload.sha256, upload.size)
        # Publish even when the blob exists: the bytes just received are
        # verified, so they also heal a copy that was damaged on disk.
        store.publish(upload.pending, upload.sha256)
        published = True

        now = utcnow()
        record = FileRecord(
            id=uuid.uuid4(),
            name=upload.name,
            size=upload.size,
            content_type=upload.content_type,
            sha256=upload.sha256,
            meta=upload.metadata,
            created_at=now,
            updated_at=now,
        )
        session.add(record)
        session.flush()
        events.record("FileOp_new", record)
        session.commit()
    except BaseException:
        if created_blob and published:
            store.remove(upload.sha256)
        upload.pending.discard()
        session.rollback()
        raise

    log.info(
        "Stored file %s sha256=%s size=%d%s",
        record.id,
        record.sha256,
        record.size,
        "" if created_blob else " (existing blob)",
    )
    return record


def _insert_blob(sha256: str, size: int) -> bool:
    dialect = db.session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = (
        insert(Blob)
        .values(sha256=sha256, size=size, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["sha256"])
    )
    return db.session.execute(statement).rowcount == 1


# Built once: a statement reused as the same object skips SQLAlchemy's
# per-call adaptation of cached result columns.
_RECORD_BY_ID = select(*FILE_COLUMNS).where(
    FileRecord.id == bindparam("file_id", type_=Uuid)
)


def read_connection() -> Connection:
    """Return a connection whose reads need no transaction round trips."""
    return read_engine().connect()


def read_engine() -> Engine:
    """Return the app's engine for reads: a pool of autocommit connections.

    A pool of its own, rather than switching pooled connections to
    autocommit and back, spares a driver call on every checkout and return.
    """
    engine = current_app.extensions.get("orb.reader")
    if engine is None:
        settings = current_app.config["ORB_SETTINGS"]
        engine = create_engine(
            db.engine.url,
            isolation_level="AUTOCOMMIT",
            **engine_options(settings),
        )
        current_app.extensions["orb.reader"] = engine

    return engine


def get_file(file_id: uuid.UUID) -> Row:
    """Return one record as a row of FILE_COLUMNS, or raise 404."""
    with read_connection() as connection:
        record = connection.execute(
            _RECORD_BY_ID, {"file_id": file_id}
        ).first()

    if record is None:
        raise _not_found(file_id)

    return record


def _lock_file(file_id: uuid.UUID) -> FileRecord:
    query = select(FileRecord).where(FileRecord.id == file_id)
    record = db.session.scalars(query.with_for_update()).first()
    if record is None:
        raise _not_found(file_id)

    return record


def _not_found(file_id: uuid.UUID) -> Problem:
    return Problem(404, "file_not_found", f"No file has id {file_id}.")


def update_file(
    file_id: uuid.UUID, patch: dict, precondition: Precondition
) -> FileRecord:
    """Rename or relabel a file from a validated merge-patch object."""
    try:
        record = _lock_file(file_id)
        precondition(record)
        if "name" in patch:
            record.name = clean_name(patch["name"])

        if "metadata" in patch:
            record.meta = merge_metadata(record.meta or {}, patch["metadata"])

        record.updated_at = max(utcnow(), record.updated_at)
        db.session.flush()
        events.record("FileOp_update", record)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise

    log.info("Updated file %s", record.id)
    return record


def delete_file(file_id: uuid.UUID, precondition: Precondition) -> None:
    """Delete a record, and its blob when no other record uses it."""
    store = blob_store()
    session = db.session
    withdrawn = None
    try:
        record = _lock_file(file_id)
        precondition(record)
        sha256 = record.sha256
        lock_blob(sha256)
        events.record("FileOp_delete", record)
        session.delete(record)
        session.flush()
        if not _blob_in_use(sha256):
            session.execute(delete(Blob).where(Blob.sha256 == sha256))
            withdrawn = store.withdraw(sha256)

        session.commit()
    except BaseException:
        if withdrawn:
            store.restore(withdrawn, sha256)
        session.rollback()
        raise

    if withdrawn:
        store.purge(withdrawn)

    log.info(
        "Deleted file %s%s", file_id, f" and blob {sha256}" if withdrawn else ""
    )


def _blob_in_use(sha256: str) -> bool:
    query = select(func.count()).where(FileRecord.sha256 == sha256)
    return db.session.scalar(query) > 0
