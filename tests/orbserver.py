"""Start and stop a real Orb: gunicorn from gunicorn.conf.py, real HTTP."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import requests
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_pids(parent: int) -> set[int]:
    """Return the pids of the processes whose parent is `parent`."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue

        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue

        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            pids.add(int(entry.name))

    return pids


def wait_until(predicate, timeout: float, interval: float = 0.05, what=""):
    """Poll `predicate` until it returns a true value or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value

        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")

        time.sleep(interval)


def create_pg_database(admin_url: str) -> str:
    """Create an empty PostgreSQL database and return its SQLAlchemy URL."""
    url = make_url(admin_url)
    name = f"orb_{uuid.uuid4().hex[:12]}"
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


class OrbServer:
    """One gunicorn master running Orb on a free port of 127.0.0.1."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.port = int(env.get("ORB_API_PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage_dir = workdir / "storage"
        self.log_dir = workdir / "logs"
        self.data_dir = workdir / "data"
        self.env = {
            "ORB_ENV_FILE": "",
            "ORB_API_PORT": str(self.port),
            "ORB_DATA_DIR": str(self.data_dir),
            "ORB_STORAGE_DIR": str(self.storage_dir),
            "ORB_LOG_DIR": str(self.log_dir),
            "ORB_WORKERS": "2",
            "ORB_THREADS": "4",
            "ORB_NODE_HOST": "127.0.0.1",
            **env,
        }
        self.process: subprocess.Popen | None = None
        self.output_path = workdir / "gunicorn.out"

    def environment(self) -> dict[str, str]:
        """Return the environment Orb's processes run with."""
        environment = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ORB_", "db_", "CLUSTER_", "SIGNALING_"))
            and key not in ("DATABASE_URL", "LEADER_RETRY_INTERVAL",
                            "LEADER_HEARTBEAT_INTERVAL",
                            "PROMETHEUS_MULTIPROC_DIR")
        }
        environment.update(self.env)
        return environment

    def flask(self, *args: str, timeout: float = 120):
        """Run `flask --app wsgi <args>` as this server's operator would."""
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", *args],
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self) -> subprocess.Popen:
        """Start gunicorn without waiting for it."""
        environment = self.environment()
        self.workdir.mkdir(parents=True, exist_ok=True)
        output = open(self.output_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
             "wsgi:app"],
            cwd=ROOT,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        output.close()
        return self.process

    def start(self, ready: bool = True) -> "OrbServer":
        """Start gunicorn and wait until it answers (and is ready)."""
        self.spawn()
        path = "/ready" if ready else "/health"
        wait_until(
            lambda: self._answers(path), START_TIMEOUT_S, what=f"{path} 200"
        )
        return self

    def _answers(self, path: str) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"gunicorn exited with {self.process.returncode}:\n"
                + self.output()
            )

        try:
            return requests.get(self.url + path, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        """Stop gunicorn and every process it started; return its status."""
        if self.process is None:
            return 0

        if self.process.poll() is None:
            try:
                os.kill(self.process.pid, sig)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass

        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

        return self.process.returncode

    def output(self) -> str:
        """Return what gunicorn printed so far."""
        try:
            return self.output_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_text(self) -> str:
        """Return the current orb_api.log."""
        try:
            return (self.log_dir / "orb_api.log").read_text(errors="replace")
        except OSError:
            return ""

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=60, **kwargs)

    def patch(self, path: str, **kwargs) -> requests.Response:
        return requests.patch(self.url + path, timeout=30, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return requests.delete(self.url + path, timeout=30, **kwargs)

    def head(self, path: str, **kwargs) -> requests.Response:
        return requests.head(self.url + path, timeout=30, **kwargs)

    def upload(self, data: bytes, name: str = "file.bin", **kwargs):
        """POST raw bytes as a file and return the response."""
        params = kwargs.pop("params", {})
        params.setdefault("name", name)
        return self.post("/api/v1/files", data=data, params=params, **kwargs)

    def counts(self) -> tuple[int, int]:
        """Return (files, blobs) as /status reports them."""
        storage = self.get("/status").json()["storage"]
        return storage["files"], storage["blobs"]

    def blob_files(self) -> list[str]:
        """Return the names of the blob files on disk."""
        return sorted(
            path.name
            for path in (self.storage_dir / "blobs").rglob("*")
            if path.is_file()
        )

    def temp_files(self) -> list[str]:
        """Return the names of files in the storage's temporary directory."""
        tmp = self.storage_dir / "tmp"
        return sorted(path.name for path in tmp.iterdir()) if tmp.exists() else []

    def snapshot(self) -> tuple:
        """Return what is stored: counts, blob files and temporary files."""
        return self.counts(), self.blob_files(), self.temp_files()
