"""Flask extensions, created unbound and attached in `create_app`."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    """Declarative base of every Orb model."""


# Records keep their loaded values after a commit: an answer built from a
# committed record must not need the database again, or a connection lost
# just after the commit would turn a stored upload into an error answer.
db = SQLAlchemy(
    model_class=Base, session_options={"expire_on_commit": False}
)
migrate = Migrate()
