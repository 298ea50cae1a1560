"""The Signaling outbox: events recorded with the change they describe."""

from flask import current_app

from .models import FileRecord


def record(event_type: str, file: FileRecord) -> None:
    """Add an event for `file` to the current transaction, if enabled."""
    settings = current_app.config["ORB_SETTINGS"]
    if not settings.signaling_host:
        return


def status_summary(database_reachable: bool) -> dict:
    """Return the `signaling` block of `/status`."""
    settings = current_app.config["ORB_SETTINGS"]
    return {
        "state": "disabled" if not settings.signaling_host else "retrying",
        "endpoint": settings.signaling_endpoint or None,
        "pending": 0,
        "delivered": 0,
        "failed": 0,
        "last_delivered_at": None,
        "last_error": None,
    }
