"""The status blueprint: identity, liveness, readiness and the full picture."""

import os
import time
import uuid
from datetime import datetime
from datetime import timezone

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import jsonify
from sqlalchemy import func
from sqlalchemy import select

from . import events
from .database import database_state
from .extensions import db
from .leader import read_state
from .models import Blob
from .models import FileRecord
from .models import rfc3339
from .version import __version__

bp = Blueprint("status", __name__)

STARTED_AT_VARIABLE = "ORB_STARTED_AT"


def started_at() -> float:
    """Return when the service (its gunicorn master) started, epoch seconds."""
    try:
        return float(os.environ[STARTED_AT_VARIABLE])
    except (KeyError, ValueError):
        os.environ[STARTED_AT_VARIABLE] = str(time.time())
        return float(os.environ[STARTED_AT_VARIABLE])


@bp.get("/")
def show_identity() -> Response:
    """Name the service, its node identity and where its API lives."""
    settings = current_app.config["ORB_SETTINGS"]
    return jsonify(
        {
            "service": "orb",
            "version": __version__,
            "node": {
                "name": settings.node_name,
                "key": settings.node_key,
                "type": settings.node_type,
            },
            "api": "/api/v1",
            "openapi": "/api/v1/openapi.json",
        }
    )


@bp.get("/health")
def show_health() -> Response:
    """Answer liveness without touching any dependency."""
    return jsonify(
        {
            "status": "healthy",
            "service": "orb",
            "version": __version__,
            "uptime_s": round(time.time() - started_at(), 3),
        }
    )


@bp.get("/ready")
def show_readiness() -> Response:
    """Answer 200 only when the database and storage can serve files."""
    state = database_state(current_app)
    checks = {
        "database": _database_check(state),
        "migrations": _migrations_check(state),
        "storage": _storage_check(),
    }
    ready = all(check["status"] == "pass" for check in checks.values())
    response = jsonify(
        {"status": "ready" if ready else "not_ready", "checks": checks}
    )
    response.status_code = 200 if ready else 503
    return response


@bp.get("/status")
def show_status() -> Response:
    """Report the node, Leader, database, storage and Signaling state."""
    settings = current_app.config["ORB_SETTINGS"]
    start = started_at()
    database = database_state(current_app)
    database.pop("error", None)
    return jsonify(
        {
            "service": "orb",
            "version": __version__,
            "started_at": rfc3339(
                datetime.fromtimestamp(start, timezone.utc)
            ),
            "uptime_s": round(time.time() - start, 3),
            "node": {
                "name": settings.node_name,
                "key": settings.node_key,
                "type": settings.node_type,
                "host": settings.node_host,
                "port": settings.api_port,
            },
            "leader": read_state(settings),
            "database": database,
            "storage": _storage_summary(database["reachable"]),
            "signaling": events.status_summary(database["reachable"]),
        }
    )


def _database_check(state: dict) -> dict:
    if state["reachable"]:
        return {
            "status": "pass",
            "detail": f"{state['backend']} answers",
            "latency_ms": state["latency_ms"],
        }

    return {
        "status": "fail",
        "detail": f"database ({state['backend']}) is not reachable",
        "latency_ms": None,
    }


def _migrations_check(state: dict) -> dict:
    if state["at_head"]:
        return {"status": "pass", "detail": f"at {state['revision']}"}

    return {
        "status": "fail",
        "detail": f"schema at {state['revision']}, "
        f"expected {current_app.extensions['orb.head']}",
    }


def _storage_check() -> dict:
    store = current_app.extensions["orb.store"]
    probe = store.tmp_dir / f".ready-{uuid.uuid4().hex}"
    try:
        store.prepare()
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return {"status": "fail", "detail": "storage directory is not writable"}

    return {"status": "pass", "detail": "storage directory is writable"}


def _storage_summary(database_reachable: bool) -> dict:
    settings = current_app.config["ORB_SETTINGS"]
    total, free = current_app.extensions["orb.store"].usage()
    summary = {
        "path": str(settings.storage_dir),
        "total_bytes": total,
        "free_bytes": free,
        "files": None,
        "blobs": None,
        "stored_bytes": None,
    }
    if not database_reachable:
        return summary

    try:
        summary["files"] = db.session.scalar(select(func.count(FileRecord.id)))
        blobs, stored = db.session.execute(
            select(func.count(Blob.sha256), func.coalesce(func.sum(Blob.size), 0))
        ).one()
        summary["blobs"] = blobs
        summary["stored_bytes"] = int(stored)
    except Exception:
        db.session.rollback()

    return summary
