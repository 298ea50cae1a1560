"""Orb, the file-storage node of the Lunaricorn cluster."""

from flask import Flask

from . import cli
from . import files
from . import metrics
from . import openapi
from . import status
from .auth import register_auth
from .config import Settings
from .config import load_settings
from .database import MIGRATIONS_DIR
from .database import engine_options
from .database import head_revision
from .extensions import db
from .extensions import migrate
from .guards import register_guards
from .problems import register_error_handlers
from .request_ids import RequestIdMiddleware
from .shutdown import ShutdownMiddleware
from .storage import LocalBlobStore


def create_app(
    config: dict | None = None, settings: Settings | None = None
) -> Flask:
    """Build the Orb WSGI application."""
    app = Flask(__name__)
    settings = settings or load_settings()
    app.config.update(
        ORB_SETTINGS=settings,
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings),
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    app.json.compact = True
    if config:
        app.config.update(config)

    register_extensions(app)
    register_storage(app, settings)
    register_blueprints(app)
    register_error_handlers(app)
    register_guards(app)
    register_auth(app)
    cli.register_commands(app)
    register_operations(app)
    return app


def register_extensions(app: Flask) -> None:
    """Bind the database and migration extensions."""
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    app.extensions["orb.head"] = head_revision()


def register_storage(app: Flask, settings: Settings) -> None:
    """Attach the blob store."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = LocalBlobStore(settings.storage_dir)
    store.prepare()
    app.extensions["orb.store"] = store


def register_blueprints(app: Flask) -> None:
    """Mount the status and files blueprints."""
    app.register_blueprint(status.bp)
    app.register_blueprint(files.bp)
    app.register_blueprint(openapi.bp)


def register_operations(app: Flask) -> None:
    """Add metrics, request ids and shutdown tracking around the app."""
    metrics.init_app(app)
    app.wsgi_app = ShutdownMiddleware(app.wsgi_app)
    app.wsgi_app = RequestIdMiddleware(app.wsgi_app)
