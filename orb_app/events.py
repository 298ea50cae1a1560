"""The Signaling outbox: events recorded with the change they describe.

`record` adds an event row to the transaction of an upload, PATCH or
DELETE, so a change and its event commit or vanish together. The
dispatcher (`orb_app.dispatcher`) delivers the rows later; it publishes
its live state in a small JSON file that every worker's `/status` reads.
"""

import hashlib
import json
import os
import time
import uuid
from datetime import datetime
from datetime import timedelta
from pathlib import Path

from flask import current_app
from sqlalchemy import func
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.orm import Session

from .config import Settings
from .extensions import db
from .models import FileRecord
from .models import OutboxEvent
from .models import rfc3339
from .models import utcnow

STATE_FILE_NAME = "signaling_state.json"
STALE_AFTER_S = 15.0


def lock_key(settings: Settings, purpose: str) -> int:
    """Return a 64-bit advisory lock key for `purpose` in this schema."""
    name = f"orb.signaling.{purpose}:{settings.db_schema}".encode()
    digest = hashlib.sha256(name).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def record(event_type: str, file: FileRecord) -> None:
    """Add an event for `file` to the current transaction, if enabled."""
    settings = current_app.config["ORB_SETTINGS"]
    if not settings.signaling_host:
        return

    session = db.session
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:key)"),
            {"key": lock_key(settings, "outbox")},
        )

    now = utcnow()
    at = now if event_type == "FileOp_delete" else file.updated_at
    event_id = uuid.uuid4()
    session.add(
        OutboxEvent(
            event_id=event_id,
            event_type=event_type,
            payload={
                "client_id": settings.node_key,
                "message": {
                    "event_id": str(event_id),
                    "id": str(file.id),
                    "name": file.name,
                    "size": file.size,
                    "sha256": file.sha256,
                    "content_type": file.content_type,
                    "node": settings.node_key,
                    "at": rfc3339(at),
                },
            },
            status="pending",
            attempts=0,
            created_at=now,
        )
    )
    session.flush()


def push_body(event: OutboxEvent) -> dict:
    """Return the push message API.md specifies for one event."""
    return {
        "type": "push",
        "client_id": event.payload["client_id"],
        "event_type": event.event_type,
        "message": event.payload["message"],
        "timestamp": event.created_at.timestamp(),
        "source": "orb",
        "creator-id": "orb",
        "tags": "{orb}",
    }


def requeue_failed(session: Session) -> int:
    """Put parked events back in the queue; return how many."""
    result = session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.status == "failed")
        .values(
            status="pending",
            attempts=0,
            next_attempt_at=None,
            last_error=None,
        )
    )
    session.commit()
    return result.rowcount


def prune_delivered(session: Session, retention_days: float) -> int:
    """Delete delivered events older than the retention; return how many."""
    cutoff = utcnow() - timedelta(days=retention_days)
    result = session.execute(
        OutboxEvent.__table__.delete().where(
            OutboxEvent.status == "delivered",
            OutboxEvent.delivered_at < cutoff,
        )
    )
    session.commit()
    return result.rowcount


def state_path(settings: Settings) -> Path:
    """Return where the dispatcher publishes its live state."""
    return settings.data_dir / "run" / STATE_FILE_NAME


def write_state(
    settings: Settings, state: str, last_error: str | None
) -> None:
    """Publish the dispatcher's state for every worker's `/status`."""
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "state": state,
        "last_error": last_error,
        "pid": os.getpid(),
        "written_at": time.time(),
    }
    scratch = path.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(body))
    os.replace(scratch, path)


def read_state(settings: Settings) -> dict:
    """Return the dispatcher's published state, `retrying` when stale."""
    try:
        state = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return {
            "state": "retrying",
            "last_error": "no dispatcher has reported",
        }

    if time.time() - state.get("written_at", 0) > STALE_AFTER_S:
        return {
            "state": "retrying",
            "last_error": state.get("last_error")
            or "the dispatcher stopped reporting",
        }

    return {"state": state["state"], "last_error": state.get("last_error")}


def status_summary(database_reachable: bool) -> dict:
    """Return the `signaling` block of `/status`."""
    settings = current_app.config["ORB_SETTINGS"]
    summary = {
        "state": "disabled",
        "endpoint": settings.signaling_endpoint or None,
        "pending": 0,
        "delivered": 0,
        "failed": 0,
        "last_delivered_at": None,
        "last_error": None,
    }
    if not settings.signaling_host:
        return summary

    summary.update(read_state(settings))
    summary.update(pending=None, delivered=None, failed=None)
    if database_reachable:
        try:
            summary.update(_counts())
        except Exception:
            db.session.rollback()

    return summary


def _counts() -> dict:
    rows = db.session.execute(
        select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)
    ).all()
    counts = dict(rows)
    last: datetime | None = db.session.scalar(
        select(func.max(OutboxEvent.delivered_at))
    )
    return {
        "pending": counts.get("pending", 0),
        "delivered": counts.get("delivered", 0),
        "failed": counts.get("failed", 0),
        "last_delivered_at": rfc3339(last) if last else None,
    }
