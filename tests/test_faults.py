"""Crashes and faults: killed workers, a full disk, a restarted database,
corrupt blobs. Whatever happens, what got 201 stays and nothing else does."""

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import requests
from orbserver import ROOT
from orbserver import child_pids
from orbserver import free_port
from orbserver import wait_until

SECRET_MARKERS = ("Traceback", 'File "', "sqlalche", "psycopg", "SELECT ",
                  "INSERT ", "/tmp/", "/work/", "/opt/")


def assert_clean_problem(answer, status: int, code: str) -> None:
    """Assert a problem answer that reveals no trace, SQL or path."""
    assert answer.status_code == status, answer.text
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["code"] == code
    for marker in SECRET_MARKERS:
        assert marker not in answer.text


def orb_command(orb, *args: str) -> subprocess.CompletedProcess:
    """Run `flask --app wsgi orb <args>` with the server's settings."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORB_", "db_", "DATABASE_URL"))
    }
    environment.update(orb.env)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "orb", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def holder_of(orb, path: Path) -> int | None:
    """Return the worker that has `path` open, if any."""
    for pid in sorted(child_pids(orb.process.pid)):
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == str(path):
                    return pid
            except OSError:
                continue

    return None


def start_stalled_upload(orb, size: int, sent: int) -> socket.socket:
    """Begin a raw upload of `size` bytes and stop after `sent` of them."""
    sock = socket.create_connection(("127.0.0.1", orb.port), timeout=60)
    sock.sendall(
        b"POST /api/v1/files?name=killed.bin HTTP/1.1\r\nHost: orb\r\n"
        + f"Content-Length: {size}\r\n\r\n".encode()
        + os.urandom(sent)
    )
    return sock


@pytest.mark.parametrize("cleanup", ["restart", "fsck"])
def test_worker_killed_mid_upload_leaves_nothing(make_server, cleanup):
    """SIGKILL to the worker mid-body: no record, no blob; fsck or a restart
    removes the temporary file."""
    orb = make_server()
    kept = os.urandom(5000)
    kept_record = orb.upload(kept, name="kept.bin").json()
    before = orb.snapshot()

    sock = start_stalled_upload(orb, 50_000_000, 3_000_000)
    tmp_dir = orb.storage_dir / "tmp"
    part = wait_until(
        lambda: [p for p in tmp_dir.iterdir() if p.name.endswith(".part")],
        30,
        what="the partial upload",
    )[0]
    worker = wait_until(lambda: holder_of(orb, part), 30, what="its worker")
    os.kill(worker, signal.SIGKILL)
    sock.close()
    wait_until(lambda: holder_of(orb, part) is None, 30, what="worker gone")

    assert orb.counts() == before[0]
    assert orb.blob_files() == before[1]
    assert part.exists()

    if cleanup == "fsck":
        result = orb_command(orb, "fsck", "--repair")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 partial files removed" in result.stdout
    else:
        orb.stop()
        orb.start()

    assert orb.snapshot() == before
    content = orb.get(kept_record["links"]["content"])
    assert content.content == kept
    again = orb.upload(b"after the crash", name="after.bin")
    assert again.status_code == 201


@pytest.fixture
def small_disk(workroot):
    """Mount a 4 MiB tmpfs to hold blobs; yield it and a way to grow it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")

    mount = Path(tempfile.mkdtemp(dir=workroot))
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {result.stderr.strip()}")

    def grow() -> None:
        subprocess.run(
            ["mount", "-o", "remount,size=64m", str(mount)], check=True
        )

    yield mount, grow
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_answers_507_and_keeps_nothing(make_server, small_disk):
    """ENOSPC mid-upload is 507; nothing is left; after space returns the
    next upload works and earlier files are intact."""
    mount, grow = small_disk
    orb = make_server(ORB_STORAGE_DIR=str(mount))
    kept = os.urandom(1_000_000)
    kept_record = orb.upload(kept, name="kept.bin").json()
    before = orb.snapshot()

    big = os.urandom(6_000_000)
    answer = orb.upload(big, name="big.bin")
    assert_clean_problem(answer, 507, "insufficient_storage")
    assert orb.snapshot() == before
    assert orb.get(kept_record["links"]["content"]).content == kept

    grow()
    answer = orb.upload(big, name="big.bin")
    assert answer.status_code == 201, answer.text
    assert orb.get(answer.json()["links"]["content"]).content == big
    assert orb.get(kept_record["links"]["content"]).content == kept
    assert orb.temp_files() == []


class PrivatePostgres:
    """A PostgreSQL cluster this test owns, so that it may restart it."""

    def __init__(self, root: Path) -> None:
        self.bin = Path(os.environ["ORB_TEST_PG_BIN"])
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://orb@127.0.0.1:{self.port}/orb"

    def run(self, *command: str) -> None:
        """Run a PostgreSQL program as the cluster's owner."""
        if os.geteuid() == 0:
            command = ("runuser", "-u", "postgres", "--", *command)
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait for it."""
        self.run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
            "-l", str(self.root / "server.log"),
            "-o", f"-p {self.port} -k {self.root} "
            "-c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server."""
        self.run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-w",
            "-m", mode, "stop",
        )

    def create(self) -> None:
        """Create and start the cluster with an `orb` database."""
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "orb",
            "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8",
        )
        self.start()
        self.run(
            str(self.bin / "createdb"), "-h", "127.0.0.1",
            "-p", str(self.port), "-U", "orb", "orb",
        )


@pytest.fixture
def private_pg():
    """Return a private PostgreSQL, stopped at the end whatever happened."""
    if "ORB_TEST_PG_BIN" not in os.environ:
        pytest.skip("no PostgreSQL binaries: run the suite with scripts/test")

    root = Path(tempfile.mkdtemp(prefix="orb-private-pg-"))
    pg = PrivatePostgres(root)
    try:
        pg.create()
        yield pg
    finally:
        try:
            pg.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(root, ignore_errors=True)


def test_database_restart_keeps_every_201(make_server, private_pg):
    """Uploads run while PostgreSQL restarts: each 201 is kept, each failure
    left nothing, and the service recovers without a restart."""
    orb = make_server(
        "sqlite", DATABASE_URL=private_pg.url, ORB_THREADS="4"
    )
    stored: dict[str, bytes] = {}
    refused: list[requests.Response] = []
    failures: list[Exception] = []
    stop = threading.Event()
    lock = threading.Lock()

    def upload_loop(worker: int) -> None:
        count = 0
        while not stop.is_set():
            data = os.urandom(20_000) + f"{worker}-{count}".encode()
            count += 1
            try:
                answer = orb.upload(data, name=f"w{worker}-{count}")
            except requests.RequestException as error:
                with lock:
                    failures.append(error)
                continue
            with lock:
                if answer.status_code == 201:
                    stored[answer.json()["id"]] = data
                else:
                    refused.append(answer)

    threads = [
        threading.Thread(target=upload_loop, args=(n,)) for n in range(3)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(stored) >= 5, 60, what="uploads before")
        private_pg.stop("fast")
        wait_until(lambda: len(refused) >= 3, 60, what="refused uploads")
        private_pg.start()
        mark = len(stored)
        wait_until(lambda: len(stored) >= mark + 5, 60, what="recovery")
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)

    for answer in refused:
        assert_clean_problem(answer, 503, "database_unavailable")

    files, blobs = orb.counts()
    assert not failures
    listed = orb.get("/api/v1/files", params={"limit": 1000}).json()["items"]
    extra = [item["name"] for item in listed if item["id"] not in stored]
    assert files == len(stored), f"refused uploads were stored: {extra}"
    assert blobs == len(stored)
    assert len(orb.blob_files()) == len(stored)
    wait_until(lambda: orb.temp_files() == [], 30, what="no temporary files")
    for file_id, data in stored.items():
        content = orb.get(f"/api/v1/files/{file_id}/content")
        assert content.status_code == 200
        assert content.content == data


def corrupt(orb, sha256: str) -> Path:
    """Flip one byte of a blob on disk, keeping its size."""
    path = orb.storage_dir / "blobs" / sha256[:2] / sha256[2:4] / sha256
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def test_corrupt_blob_is_reported_and_never_sent(make_server):
    """fsck names a corrupt blob and its file and exits non-zero; a
    download of it is refused rather than sent with a false ETag."""
    orb = make_server()
    good = os.urandom(10_000)
    bad = os.urandom(10_000)
    good_record = orb.upload(good, name="good.bin").json()
    bad_record = orb.upload(bad, name="bad.bin").json()
    assert orb_command(orb, "fsck").returncode == 0

    corrupt(orb, bad_record["sha256"])
    result = orb_command(orb, "fsck")
    assert result.returncode == 1
    assert f"corrupt {bad_record['sha256']}" in result.stdout
    assert bad_record["id"] in result.stdout
    assert good_record["sha256"] not in result.stdout

    for headers in ({}, {"Range": "bytes=0-99"}):
        answer = orb.get(bad_record["links"]["content"], headers=headers)
        assert_clean_problem(answer, 500, "blob_corrupt")
        assert hashlib.sha256(answer.content).hexdigest() != bad_record[
            "sha256"
        ]

    assert bad_record["id"] in orb.log_text()
    assert orb.get(good_record["links"]["content"]).content == good


def test_truncated_blob_is_never_sent(make_server):
    """A blob shorter than its record is refused, whatever its size."""
    orb = make_server()
    record = orb.upload(os.urandom(50_000), name="short.bin").json()
    sha = record["sha256"]
    path = orb.storage_dir / "blobs" / sha[:2] / sha[2:4] / sha
    path.write_bytes(path.read_bytes()[:1000])
    answer = orb.get(record["links"]["content"])
    assert_clean_problem(answer, 500, "blob_corrupt")
    result = orb_command(orb, "fsck")
    assert result.returncode == 1
    assert f"corrupt {sha}" in result.stdout
