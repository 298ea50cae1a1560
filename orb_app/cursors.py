"""Opaque, tamper-evident cursors for keyset pagination of file lists."""

import uuid
from datetime import datetime

from itsdangerous import BadData
from itsdangerous import URLSafeSerializer

from .problems import Problem

# Cursors are signed so that a changed or foreign one is refused; they
# carry no secret, so a fixed key is enough.
_SERIALIZER = URLSafeSerializer("orb-list-cursor", salt="orb.files.v1")


def encode_cursor(
    created_at: datetime, file_id: uuid.UUID, filters: list
) -> str:
    """Return the cursor for the page after the given record."""
    return _SERIALIZER.dumps([created_at.isoformat(), str(file_id), filters])


def decode_cursor(
    cursor: str, filters: list
) -> tuple[datetime, uuid.UUID]:
    """Return the keyset position of a cursor made for the same filters."""
    try:
        stamp, file_id, made_for = _SERIALIZER.loads(cursor)
        position = (datetime.fromisoformat(stamp), uuid.UUID(file_id))
    except (BadData, ValueError, TypeError):
        raise Problem(
            400, "invalid_parameter", "The cursor is not valid."
        ) from None

    if made_for != filters or position[0].tzinfo is None:
        raise Problem(
            400,
            "invalid_parameter",
            "The cursor belongs to a different listing.",
        )

    return position
