"""`flask orb ...`: operator commands."""

import sys

import click
from flask import Flask
from flask import current_app
from flask.cli import AppGroup

from . import events
from . import maintenance
from .extensions import db

orb_cli = AppGroup("orb", help="Orb maintenance commands.")
events_cli = AppGroup("events", help="Signaling outbox commands.")
orb_cli.add_command(events_cli)


def register_commands(app: Flask) -> None:
    """Add the `orb` command group to the app's CLI."""
    app.cli.add_command(orb_cli)


@orb_cli.command("fsck")
@click.option("--repair", is_flag=True, help="Remove orphaned blobs.")
def fsck_command(repair: bool) -> None:
    """Re-hash every blob and report missing, corrupt and orphaned ones."""
    report = maintenance.fsck(current_app, repair)
    for sha256 in report.corrupt:
        files = ", ".join(maintenance.files_using(sha256)) or "-"
        click.echo(f"corrupt {sha256} files: {files}")

    for sha256 in report.missing:
        files = ", ".join(maintenance.files_using(sha256)) or "-"
        click.echo(f"missing {sha256} files: {files}")

    for sha256 in report.orphaned:
        action = "removed" if sha256 in report.removed else "kept"
        click.echo(f"orphaned {sha256} ({action})")

    click.echo(
        f"checked {report.checked} blobs: {len(report.corrupt)} corrupt, "
        f"{len(report.missing)} missing, {len(report.orphaned)} orphaned, "
        f"{len(report.removed)} removed, {report.leftovers} partial files "
        "removed"
    )
    sys.exit(0 if report.healthy else 1)


@orb_cli.command("prepare")
def prepare_command() -> None:
    """Migrate the database to head and clean what a crash left."""
    maintenance.migrate_database(current_app)
    leftovers, orphans = maintenance.clean_after_crash(current_app)
    if leftovers or orphans:
        click.echo(
            f"Start-up clean-up removed {leftovers} partial files and "
            f"{orphans} orphan blobs"
        )


@events_cli.command("retry")
def events_retry_command() -> None:
    """Put events parked as failed back in the Signaling queue."""
    count = events.requeue_failed(db.session)
    click.echo(f"re-queued {count} parked events")
