"""Start-up repair and consistency checks of blobs against records."""

import logging
from dataclasses import dataclass
from dataclasses import field

from flask import Flask
from flask import current_app
from flask_migrate import upgrade
from sqlalchemy import select

from .catalog import lock_blob
from .database import MIGRATIONS_DIR
from .extensions import db
from .models import Blob
from .models import FileRecord
from .storage import hash_file

log = logging.getLogger(__name__)


@dataclass
class FsckReport:
    """What `fsck` found: blob ids by kind of fault."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    leftovers: int = 0

    @property
    def healthy(self) -> bool:
        unrepaired = set(self.orphaned) - set(self.removed)
        return not (self.missing or self.corrupt or unrepaired)


def migrate_database(app: Flask) -> None:
    """Bring the schema to head (serialised across nodes by env.py)."""
    with app.app_context():
        upgrade(directory=str(MIGRATIONS_DIR))
        db.engine.dispose()


def clean_after_crash(app: Flask) -> tuple[int, int]:
    """Remove what a crash left; return (partial files, orphan blobs)."""
    store = app.extensions["orb.store"]
    leftovers = store.clean_leftovers(grace_s=0)
    with app.app_context():
        orphans = [sha for sha, _, _ in store.iter_blobs() if _remove_orphan(sha)]
        db.engine.dispose()

    if leftovers or orphans:
        log.warning(
            "Start-up clean-up removed %d partial files and %d orphan blobs",
            leftovers,
            len(orphans),
        )

    return leftovers, len(orphans)


def _remove_orphan(sha256: str) -> bool:
    store = current_app.extensions["orb.store"]
    try:
        lock_blob(sha256)
        if db.session.get(Blob, sha256) is not None:
            db.session.rollback()
            return False

        store.remove(sha256)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise

    log.info("Removed orphan blob %s", sha256)
    return True


def fsck(app: Flask, repair: bool) -> FsckReport:
    """Re-hash every blob and compare blobs on disk with their records."""
    store = app.extensions["orb.store"]
    report = FsckReport()
    if repair:
        report.leftovers = store.clean_leftovers()

    known = dict(db.session.execute(select(Blob.sha256, Blob.size)).all())
    db.session.rollback()
    on_disk = set()
    for sha256, size, _ in store.iter_blobs():
        on_disk.add(sha256)
        report.checked += 1
        if sha256 not in known:
            report.orphaned.append(sha256)
            if repair and _remove_orphan(sha256):
                report.removed.append(sha256)
            continue

        with store.open(sha256) as handle:
            actual = hash_file(handle)

        if actual != sha256 or size != known[sha256]:
            report.corrupt.append(sha256)

    report.missing = sorted(set(known) - on_disk)
    return report


def files_using(sha256: str) -> list[str]:
    """Return the ids of the records that point at a blob."""
    query = select(FileRecord.id).where(FileRecord.sha256 == sha256)
    return [str(file_id) for file_id in db.session.scalars(query)]
