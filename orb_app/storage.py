"""Content-addressed blob storage behind one small interface.

`BlobStore` is what the rest of Orb uses; `LocalBlobStore` keeps blobs on a
local file system as `<root>/blobs/<aa>/<bb>/<sha256>`, writes uploads into
`<root>/tmp/` first and moves a finished blob into place atomically. A
later object-store backend implements the same methods.
"""

import errno
import fcntl
import hashlib
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO
from typing import Protocol

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
PART_SUFFIX = ".part"
TRASH_SUFFIX = ".trash"
WITHDRAWN_GRACE_S = 60
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


class StorageFull(OSError):
    """The blob store has no room left for an upload."""


class PendingBlob:
    """An upload being written: bytes go to a temporary file and a hash."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._fd: int | None = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640
        )
        # The lock tells a cleaner that a live process still owns the file;
        # the kernel drops it when the process dies, however it dies.
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def write(self, data: bytes) -> None:
        """Append bytes to the blob and the running hash."""
        self._hash.update(data)
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except OSError as error:
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise StorageFull(error.errno, "storage is full") from None
                raise

            view = view[written:]

        self.size += len(data)

    def finish(self) -> str:
        """Flush the bytes to disk and return their sha256 in hex."""
        try:
            os.fsync(self._fd)
        except OSError as error:
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(error.errno, "storage is full") from None
            raise
        finally:
            self.close()

        return self._hash.hexdigest()

    @property
    def digest(self) -> bytes:
        """Return the sha256 of the bytes written so far."""
        return self._hash.digest()

    def close(self) -> None:
        """Close the temporary file, keeping it on disk."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def discard(self) -> None:
        """Close and remove the temporary file."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class BlobStore(Protocol):
    """What Orb needs from a place that keeps blobs."""

    def begin(self) -> PendingBlob:
        """Start writing a new blob."""

    def publish(self, pending: PendingBlob, sha256: str) -> None:
        """Make a finished blob readable under its sha256."""

    def open(self, sha256: str) -> BinaryIO:
        """Open a blob for reading; FileNotFoundError when it is missing."""

    def exists(self, sha256: str) -> bool:
        """Tell whether a blob is present."""

    def withdraw(self, sha256: str) -> str | None:
        """Move a blob out of sight, returning a token for restore/purge."""

    def restore(self, token: str, sha256: str) -> None:
        """Put a withdrawn blob back."""

    def purge(self, token: str) -> None:
        """Remove a withdrawn blob for good."""

    def remove(self, sha256: str) -> None:
        """Remove a blob at once."""

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """Yield (sha256, size, mtime) of every stored blob."""

    def clean_leftovers(self, grace_s: float) -> int:
        """Remove what an interrupted upload or delete left; return a count."""

    def usage(self) -> tuple[int, int]:
        """Return (total, free) bytes of the underlying storage."""


class LocalBlobStore:
    """Blobs on a local file system, fanned out by hash prefix."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"

    def prepare(self) -> None:
        """Create the directories the store needs."""
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        """Return where the blob with this sha256 lives."""
        return self.blob_dir / sha256[:2] / sha256[2:4] / sha256

    def begin(self) -> PendingBlob:
        """Start writing a new blob into the temporary directory."""
        name = f"{uuid.uuid4().hex}{PART_SUFFIX}"
        try:
            return PendingBlob(self.tmp_dir / name)
        except FileNotFoundError:
            self.prepare()
            return PendingBlob(self.tmp_dir / name)

    def publish(self, pending: PendingBlob, sha256: str) -> None:
        """Move a finished blob into place and make the move durable."""
        target = self.path_of(sha256)
        created = _make_dirs(target.parent)
        os.replace(pending.path, target)
        _fsync_dir(target.parent)
        for directory in created:
            _fsync_dir(directory.parent)

    def open(self, sha256: str) -> BinaryIO:
        """Open a blob for reading."""
        return open(self.path_of(sha256), "rb")

    def exists(self, sha256: str) -> bool:
        """Tell whether a blob is present."""
        return self.path_of(sha256).is_file()

    def withdraw(self, sha256: str) -> str | None:
        """Rename a blob into the temporary directory before its removal."""
        token = f"{sha256}.{uuid.uuid4().hex}{TRASH_SUFFIX}"
        try:
            os.replace(self.path_of(sha256), self.tmp_dir / token)
        except FileNotFoundError:
            return None

        return token

    def restore(self, token: str, sha256: str) -> None:
        """Move a withdrawn blob back into place."""
        target = self.path_of(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp_dir / token, target)

    def purge(self, token: str) -> None:
        """Delete a withdrawn blob."""
        try:
            (self.tmp_dir / token).unlink()
        except FileNotFoundError:
            pass

    def remove(self, sha256: str) -> None:
        """Delete a blob."""
        try:
            self.path_of(sha256).unlink()
        except FileNotFoundError:
            pass

    def iter_blobs(self) -> Iterator[tuple[str, int, float]]:
        """Yield (sha256, size, mtime) of every blob on disk."""
        if not self.blob_dir.is_dir():
            return

        for first in _subdirectories(self.blob_dir):
            for second in _subdirectories(first):
                for blob in sorted(second.iterdir()):
                    if _SHA256_NAME.match(blob.name) and blob.is_file():
                        stat = blob.stat()
                        yield blob.name, stat.st_size, stat.st_mtime

    def clean_leftovers(self, grace_s: float = WITHDRAWN_GRACE_S) -> int:
        """Drop abandoned partial uploads; restore blobs left withdrawn.

        A partial upload is abandoned when no process holds its lock. A
        withdrawn blob is put back when nothing replaced it, since its
        delete may not have committed; an orphan sweep removes it later.
        """
        if not self.tmp_dir.is_dir():
            return 0

        cleaned = 0
        for entry in self.tmp_dir.iterdir():
            if entry.name.endswith(TRASH_SUFFIX):
                cleaned += self._settle_withdrawn(entry, grace_s)
            elif entry.name.endswith(PART_SUFFIX) and _abandoned(entry):
                entry.unlink(missing_ok=True)
                log.info("Removed abandoned upload %s", entry.name)
                cleaned += 1

        return cleaned

    def _settle_withdrawn(self, entry: Path, grace_s: float) -> int:
        try:
            if age_seconds(entry.stat().st_ctime) < grace_s:
                return 0
        except FileNotFoundError:
            return 0

        sha256 = entry.name.split(".", 1)[0]
        if not self.exists(sha256):
            self.restore(entry.name, sha256)
            log.warning("Restored withdrawn blob %s", sha256)
            return 1

        entry.unlink(missing_ok=True)
        return 1

    def usage(self) -> tuple[int, int]:
        """Return (total, free) bytes of the file system holding blobs."""
        stat = os.statvfs(self.root if self.root.exists() else ".")
        return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


def hash_file(handle: BinaryIO) -> str:
    """Return the sha256 hex digest of an open file, read in large chunks."""
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK_SIZE):
        digest.update(chunk)

    return digest.hexdigest()


def age_seconds(mtime: float) -> float:
    """Return how long ago, in seconds, a file was last written."""
    return time.time() - mtime


def _subdirectories(directory: Path) -> list[Path]:
    return sorted(entry for entry in directory.iterdir() if entry.is_dir())


def _abandoned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)

    return True


def _make_dirs(directory: Path) -> list[Path]:
    created: list[Path] = []
    missing = directory
    while not missing.exists():
        created.append(missing)
        missing = missing.parent

    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(created))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
