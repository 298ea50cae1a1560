"""Engine settings, SQLite behaviour, and the migration state of the schema."""

import select
import sqlite3
import time
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import event
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import Pool

from .config import Settings
from .extensions import db

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "alembic_version"


def engine_options(settings: Settings) -> dict:
    """Return SQLAlchemy engine options for the configured backend."""
    if settings.db_backend == "sqlite":
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}

    # One connection per worker thread; liveness is checked at checkout
    # without a round trip (_drop_closed_connection), not by pre-ping.
    return {
        "pool_size": settings.threads,
        "max_overflow": 4,
        "pool_timeout": 10,
        "pool_recycle": 1800,
        "connect_args": {
            "options": f"-c search_path={settings.db_schema}",
            "connect_timeout": 5,
            "application_name": f"orb:{settings.node_key}",
            "keepalives": 1,
            "keepalives_idle": 30,
        },
    }


@event.listens_for(Engine, "connect")
def _sqlite_on_connect(dbapi_connection, connection_record) -> None:
    """Give every SQLite connection WAL, case-sensitive LIKE and FKs."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return

    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@event.listens_for(Pool, "checkout")
def _drop_closed_connection(
    dbapi_connection, connection_record, connection_proxy
) -> None:
    """Replace a pooled PostgreSQL connection that the server has closed.

    An idle connection has nothing to read, so a readable socket means
    the server said goodbye (a restart, a terminated backend). This costs
    no round trip, where pool_pre_ping sends a query on every checkout.
    """
    if not type(dbapi_connection).__module__.startswith("psycopg2"):
        return

    if dbapi_connection.closed:
        raise DisconnectionError("The connection is closed")

    poller = select.poll()
    poller.register(dbapi_connection.fileno(), select.POLLIN)
    if poller.poll(0):
        raise DisconnectionError("The database closed the connection")


@event.listens_for(Engine, "begin")
def _sqlite_on_begin(connection) -> None:
    """Start SQLite transactions IMMEDIATE so writers queue, not fail."""
    if connection.dialect.name != "sqlite":
        return

    isolation = connection.get_execution_options().get("isolation_level")
    if isolation != "AUTOCOMMIT":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def head_revision() -> str | None:
    """Return the newest revision in `migrations/`."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        return None

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def database_state(app: Flask) -> dict:
    """Probe the database: reachability, latency and migration revision."""
    settings = app.config["ORB_SETTINGS"]
    state = {
        "backend": settings.db_backend,
        "reachable": False,
        "latency_ms": None,
        "schema": settings.db_schema
        if settings.db_backend == "postgresql"
        else None,
        "revision": None,
        "at_head": False,
    }
    started = time.perf_counter()
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            state["latency_ms"] = round(
                (time.perf_counter() - started) * 1000, 2
            )
            state["reachable"] = True
            context = MigrationContext.configure(
                connection, opts=_version_table_options(settings)
            )
            state["revision"] = context.get_current_revision()
    except Exception as error:
        state["error"] = type(error).__name__
        return state

    state["at_head"] = state["revision"] == app.extensions["orb.head"]
    return state


def _version_table_options(settings: Settings) -> dict:
    if settings.db_backend != "postgresql":
        return {}

    return {"version_table_schema": settings.db_schema}
