"""What the gunicorn master does for Orb: the bodies of its hooks.

The master sets up logging once, prepares the database (in a child
process, so that no database connection is ever inherited by a worker),
and runs the Leader registrar thread, which no forked worker inherits.
"""

import logging
import os
import signal
import subprocess
import sys
import threading
import time

from gunicorn import glogging

from . import dispatcher
from . import metrics
from . import shutdown
from .config import PROJECT_ROOT
from .config import ConfigError
from .config import Settings
from .config import load_settings
from .guards import stalled
from .leader import LeaderRegistrar
from .logging_setup import setup_logging
from .status import STARTED_AT_VARIABLE

log = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 300
PREPARE_RETRY_S = 10

_registrar: LeaderRegistrar | None = None
_stopping = threading.Event()


def settings_or_exit() -> Settings:
    """Load the settings, or stop with one line naming the bad variable."""
    try:
        return load_settings()
    except ConfigError as error:
        sys.stderr.write(f"orb: configuration error: {error}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None


def on_starting(settings: Settings) -> None:
    """Set up logging, prepare the database and start the registrar."""
    global _registrar

    setup_logging(settings)
    metrics.prepare_directory(settings)
    os.environ[STARTED_AT_VARIABLE] = str(time.time())
    log.info(
        "Starting Orb on port %d (%s, storage %s)",
        settings.api_port,
        settings.db_backend,
        settings.storage_dir,
    )
    if not prepare_database():
        threading.Thread(
            target=_retry_prepare, name="orb-prepare-retry", daemon=True
        ).start()

    _registrar = LeaderRegistrar(settings)
    _registrar.start()
    if settings.leader_required and settings.leader_url:
        wait_for_registration(_registrar, settings)


def on_exit() -> None:
    """Stop the registrar and background jobs of the master."""
    _stopping.set()
    if _registrar is not None:
        _registrar.stop()

    log.info("Orb stopped")


def post_worker_init(settings: Settings) -> None:
    """Set up the worker after the fork: metrics, shutdown, dispatcher."""
    metrics.init_worker()
    shutdown.install(settings.graceful_timeout)
    dispatcher.start(settings)


def post_request(environ: dict, response) -> None:
    """Count a finished request and stop tracking its connection."""
    shutdown.end_request(environ)
    if response is None:
        return

    metrics.observe_request(
        environ, response.status_code, body_bytes_sent(environ, response)
    )


def body_bytes_sent(environ: dict, response) -> int:
    """Return the body bytes gunicorn sent, sendfile included.

    gunicorn counts bytes it writes itself in `sent` but not those it hands
    to sendfile; a body that went out by sendfile is `response_length`.
    Answers gunicorn writes itself (refused requests) lack some fields.
    """
    sent = getattr(response, "sent", 0) or 0
    if sent or environ.get("REQUEST_METHOD") == "HEAD":
        return sent

    status = getattr(response, "status_code", None)
    if status in (None, 204, 304) or not getattr(response, "headers_sent", False):
        return sent

    return getattr(response, "response_length", None) or 0


def child_exit(pid: int) -> None:
    """Drop the metrics files of a worker that exited."""
    metrics.mark_process_dead(pid)


def worker_exit() -> None:
    """Stop the worker's Signaling dispatcher thread."""
    dispatcher.stop()


def prepare_database() -> bool:
    """Run `flask orb prepare` (migrate, clean up) in a child; report success."""
    command = [sys.executable, "-m", "flask", "--app", "wsgi", "orb", "prepare"]
    try:
        result = subprocess.run(
            command,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=PREPARE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        log.error("Database preparation timed out after %ds", PREPARE_TIMEOUT_S)
        return False

    if result.returncode != 0:
        log.error("Database preparation failed: %s", _failure_line(result))
        return False

    for line in result.stdout.splitlines():
        log.info("%s", line)

    log.info("Database is at the newest migration")
    return True


def _failure_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout).strip().splitlines()
    errors = [line for line in lines if "Error" in line and "sqlalche.me" not in line]
    if errors:
        return errors[-1].strip()[:300]

    return f"exit status {result.returncode}"


def _retry_prepare() -> None:
    while not _stopping.wait(PREPARE_RETRY_S):
        if prepare_database():
            return


def wait_for_registration(registrar: LeaderRegistrar, settings: Settings) -> None:
    """Hold start-up until the Leader registers this node, or exit."""
    received: list[int] = []

    def interrupt(signum, frame) -> None:
        received.append(signum)

    previous = {
        signum: signal.signal(signum, interrupt)
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    log.info("ORB_LEADER_REQUIRED is set: waiting for Leader registration")
    deadline = time.monotonic() + settings.leader_wait_timeout
    try:
        while not registrar.wait_registered(0.2):
            if received:
                _abort_start(
                    registrar,
                    f"{signal.Signals(received[0]).name} received while "
                    "waiting for Leader registration",
                )

            if time.monotonic() > deadline:
                _abort_start(
                    registrar,
                    "no Leader registration within "
                    f"{settings.leader_wait_timeout:g}s",
                )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _abort_start(registrar: LeaderRegistrar, reason: str) -> None:
    registrar.stop()
    log.error("Orb start-up aborted: %s", reason)
    raise SystemExit(1)


class GunicornLogger(glogging.Logger):
    """gunicorn's error and access logs, handed to Orb's root handlers."""

    def setup(self, cfg) -> None:
        self.cfg = cfg
        self._access_log_enabled = True
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        self.error_log.setLevel(self.loglevel)
        self.access_log.setLevel(logging.INFO)
        for logger in (self.error_log, self.access_log):
            logger.propagate = True
            for handler in list(logger.handlers):
                logger.removeHandler(handler)

    def exception(self, msg, *args, **kwargs) -> None:
        """Log a client that went quiet in one line, other errors in full."""
        if stalled(sys.exc_info()[1]):
            self.error_log.warning("Closed a quiet client's connection")
            return

        super().exception(msg, *args, **kwargs)

    def atoms(self, resp, req, environ, request_time) -> dict:
        """Return the access-log atoms, with sendfile bodies counted."""
        atoms = super().atoms(resp, req, environ, request_time)
        sent = body_bytes_sent(environ, resp)
        atoms["B"] = sent
        atoms["b"] = str(sent) if sent else "-"
        return atoms

    def reopen_files(self) -> None:
        """Leave reopening to the rotating handler."""

    def close_on_exec(self) -> None:
        """Leave descriptors to the handlers that own them."""
