"""Alembic environment for Orb.

On PostgreSQL every table and Alembic's own version table live in the
configured schema (created if missing), reached through the connection's
search_path; a transaction-level advisory lock makes two nodes that start
together migrate one after the other. SQLite has no schemas.
"""

import logging
from logging.config import fileConfig

from alembic import context
from flask import current_app
from sqlalchemy import text

MIGRATION_LOCK_KEY = 0x4F52424D4947  # "ORBMIG"

config = context.config
if not logging.getLogger().handlers:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

logger = logging.getLogger("alembic.env")
target_db = current_app.extensions["migrate"].db
settings = current_app.config["ORB_SETTINGS"]


def get_engine():
    """Return the application's engine."""
    return target_db.engine


def run_migrations_offline() -> None:
    """Emit SQL for the migrations without a database."""
    context.configure(
        url=get_engine().url.render_as_string(hide_password=False),
        target_metadata=target_db.metadata,
        literal_binds=True,
        version_table_schema=_version_schema(get_engine().dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations, one node at a time."""
    conf_args = dict(current_app.extensions["migrate"].configure_args)
    conf_args.setdefault("process_revision_directives", _skip_empty)
    conf_args["render_as_batch"] = get_engine().dialect.name == "sqlite"
    conf_args["include_object"] = _include_object
    conf_args["render_item"] = _render_item
    with get_engine().connect() as connection:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            _lock_and_create_schema(connection)

        context.configure(
            connection=connection,
            target_metadata=target_db.metadata,
            version_table_schema=_version_schema(dialect),
            **conf_args,
        )
        with context.begin_transaction():
            context.run_migrations()

        connection.commit()


def _version_schema(dialect: str) -> str | None:
    return settings.db_schema if dialect == "postgresql" else None


def _lock_and_create_schema(connection) -> None:
    connection.execute(
        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
    )
    connection.execute(
        text(f'CREATE SCHEMA IF NOT EXISTS "{settings.db_schema}"')
    )


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    return not (type_ == "table" and name == "alembic_version")


def _render_item(type_, obj, autogen_context):
    if type_ == "type" and type(obj).__name__ == "UtcDateTime":
        return "sa.DateTime(timezone=True)"

    return False


def _skip_empty(context, revision, directives) -> None:
    if getattr(config.cmd_opts, "autogenerate", False):
        if directives[0].upgrade_ops.is_empty():
            directives[:] = []
            logger.info("No changes in schema detected")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
