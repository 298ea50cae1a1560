"""Register this node with the cluster Leader and keep it registered.

The registrar runs as one thread in the gunicorn master (never in a worker)
and follows API.md's protocol: wait for the Leader, POST /v1/imalive, then
repeat that POST as a heartbeat, going back to waiting after a failure. Its
state is written to a small JSON file so that every worker's `/status`
shows the registrar's true state.
"""

import json
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.parse import urlunsplit

import requests

from .config import Settings
from .models import rfc3339
from .models import utcnow
from .version import __version__

log = logging.getLogger(__name__)

STATE_FILE_NAME = "leader_state.json"


def state_path(settings: Settings) -> Path:
    """Return where the registrar publishes its state."""
    return settings.data_dir / "run" / STATE_FILE_NAME


def safe_url(url: str) -> str:
    """Return the Leader URL with any password masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url

    host = parts.netloc.rpartition("@")[2]
    netloc = f"{parts.username}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def registration_body(settings: Settings) -> dict:
    """Return the JSON body this node POSTs to /v1/imalive."""
    return {
        "node_name": settings.node_name,
        "node_type": settings.node_type,
        "instance_key": settings.node_key,
        "host": settings.node_host,
        "port": settings.api_port,
        "additional": {"version": __version__, "api": "/api/v1"},
    }


def read_state(settings: Settings) -> dict:
    """Return the registrar's last published state, as a worker sees it."""
    if not settings.leader_url:
        return _initial_state(settings)

    try:
        state = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        state = _initial_state(settings)
        state["state"] = "waiting"

    state.pop("pid", None)
    return state


def _initial_state(settings: Settings) -> dict:
    return {
        "url": safe_url(settings.leader_url) or None,
        "state": "waiting" if settings.leader_url else "disabled",
        "registered_at": None,
        "last_heartbeat_at": None,
        "heartbeats_ok": 0,
        "heartbeats_failed": 0,
        "last_error": None,
    }


class LeaderRegistrar:
    """Background registration and heartbeat against the Leader."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = _initial_state(settings)
        self.registered = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self._path = state_path(settings)

    def start(self) -> None:
        """Start the background thread (or note standalone mode)."""
        if not self.settings.leader_url:
            log.info("No CLUSTER_LEADER_URL set: Orb runs standalone")
            return

        self._publish()
        self._thread = threading.Thread(
            target=self._run, name="orb-leader-registrar", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; a forked copy of the registrar does nothing."""
        if os.getpid() != self._owner_pid or self._thread is None:
            return

        self._stopping.set()
        self._thread.join(timeout)
        log.info("Leader registrar stopped")

    def wait_registered(self, timeout: float) -> bool:
        """Block until the first registration or `timeout` seconds."""
        return self.registered.wait(timeout)

    def _run(self) -> None:
        session = requests.Session()
        try:
            while not self._stopping.is_set():
                if self._wait_for_leader(session) and self._register(session):
                    self._beat_until_failure(session)
        finally:
            session.close()

    def _wait_for_leader(self, session: requests.Session) -> bool:
        announced = False
        while not self._stopping.is_set():
            try:
                response = session.get(
                    self.settings.leader_url,
                    timeout=self.settings.leader_timeout,
                )
                if response.status_code == 200:
                    return True
                error = f"Leader answered {response.status_code}"
            except requests.RequestException as exc:
                error = _describe(exc)

            if not announced:
                log.warning(
                    "Waiting for Leader at %s: %s",
                    safe_url(self.settings.leader_url),
                    error,
                )
                announced = True

            self._update(state="waiting", last_error=error)
            self._stopping.wait(self.settings.leader_retry_interval)

        return False

    def _register(self, session: requests.Session) -> bool:
        error = self._post_alive(session)
        if error:
            log.error("Orb node registration with Leader failed: %s", error)
            self._update(state="waiting", last_error=error)
            self._stopping.wait(self.settings.leader_retry_interval)
            return False

        now = rfc3339(utcnow())
        self._update(
            state="registered",
            registered_at=now,
            last_heartbeat_at=now,
            last_error=None,
        )
        log.info(
            "Registered with Leader %s as %s/%s",
            safe_url(self.settings.leader_url),
            self.settings.node_type,
            self.settings.node_key,
        )
        self.registered.set()
        return True

    def _beat_until_failure(self, session: requests.Session) -> None:
        interval = self.settings.leader_heartbeat_interval
        while not self._stopping.wait(interval):
            error = self._post_alive(session)
            if error:
                self._update(
                    state="lost",
                    heartbeats_failed=self.state["heartbeats_failed"] + 1,
                    last_error=error,
                )
                log.warning(
                    "Lost Leader %s: %s",
                    safe_url(self.settings.leader_url),
                    error,
                )
                return

            self._update(
                last_heartbeat_at=rfc3339(utcnow()),
                heartbeats_ok=self.state["heartbeats_ok"] + 1,
            )

    def _post_alive(self, session: requests.Session) -> str | None:
        try:
            response = session.post(
                f"{self.settings.leader_url}/v1/imalive",
                json=registration_body(self.settings),
                timeout=self.settings.leader_timeout,
            )
        except requests.RequestException as exc:
            return _describe(exc)

        if response.status_code != 200:
            return f"Leader answered {response.status_code}"

        return None

    def _update(self, **changes) -> None:
        self.state.update(changes)
        self._publish()

    def _publish(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        body = dict(self.state, pid=os.getpid(), written_at=time.time())
        scratch = self._path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_text(json.dumps(body))
        os.replace(scratch, self._path)


def _describe(error: requests.RequestException) -> str:
    if isinstance(error, requests.ConnectionError):
        return "connection refused or unreachable"

    if isinstance(error, requests.Timeout):
        return "timed out"

    return type(error).__name__
