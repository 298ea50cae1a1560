"""Prometheus metrics, summed over every gunicorn worker.

prometheus-client's multiprocess mode keeps each worker's samples in
files under PROMETHEUS_MULTIPROC_DIR, which the master sets and empties at
start (`prepare_directory`) and `GET /metrics` merges. The mode is chosen
when prometheus_client is first imported, so this module imports it only
inside functions: the master must not import it before the variable is
set, and workers import it after the fork.

Request counts, durations and transfer sizes are recorded per request by
gunicorn's `post_request` hook (`observe_request`), after the body has
been sent. Files, blobs, stored bytes, the Leader and Signaling figures are
read at scrape time from the database and the registrar's state file.
"""

import logging
import os
import threading
import time
from pathlib import Path

from flask import Blueprint
from flask import Response
from flask import current_app
from flask import request
from flask import request_started
from sqlalchemy import func
from sqlalchemy import select

from . import events
from .config import Settings
from .extensions import db
from .leader import read_state
from .models import Blob
from .models import FileRecord

log = logging.getLogger(__name__)

bp = Blueprint("metrics", __name__)

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
ROUTE_KEY = "orb.route"
STARTED_KEY = "orb.started"
INPUT_KEY = "orb.input"
UNMATCHED_ROUTE = "unmatched"
UPLOAD_ROUTE = "/api/v1/files"
DURATION_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 1800.0,
)

_instruments_lock = threading.Lock()
_instruments_made: dict = {}


def prepare_directory(settings: Settings) -> Path:
    """Set PROMETHEUS_MULTIPROC_DIR for this process tree and empty it."""
    path = settings.metrics_dir
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()

    os.environ[MULTIPROC_VARIABLE] = str(path)
    return path


def mark_process_dead(pid: int) -> None:
    """Drop the live-gauge files of a worker that exited."""
    if not os.environ.get(MULTIPROC_VARIABLE):
        return

    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class MetricsMiddleware:
    """WSGI middleware noting when a request started and its body size."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        environ[STARTED_KEY] = time.monotonic()
        counted = CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = counted
        environ[INPUT_KEY] = counted
        return self.app(environ, start_response)


class CountingInput:
    """A WSGI input stream that counts the bytes read from it."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.count = 0

    def read(self, size: int | None = -1) -> bytes:
        """Read up to `size` bytes (all when negative or None)."""
        if size is None:
            size = -1

        data = self.stream.read(size)
        self.count += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        """Read one line."""
        data = self.stream.readline(size)
        self.count += len(data)
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Read the remaining lines."""
        lines = self.stream.readlines(hint)
        self.count += sum(len(line) for line in lines)
        return lines

    def __iter__(self):
        return iter(self.readline, b"")


def init_app(app) -> None:
    """Record each request's route template and mount `/metrics`."""
    request_started.connect(_note_route, app)
    app.register_blueprint(bp)
    app.wsgi_app = MetricsMiddleware(app.wsgi_app)


def _note_route(sender, **extra) -> None:
    """Keep the matched route template, before any before_request runs."""
    rule = request.url_rule
    request.environ[ROUTE_KEY] = rule.rule if rule else UNMATCHED_ROUTE


def init_worker() -> None:
    """Create this worker's instruments before it serves a request."""
    _instruments()


def _instruments() -> dict:
    with _instruments_lock:
        if not _instruments_made:
            _instruments_made.update(_make_instruments())

        return _instruments_made


def _make_instruments() -> dict:
    from prometheus_client import Counter
    from prometheus_client import Histogram

    return {
        "requests": Counter(
            "orb_http_requests",
            "HTTP requests served, by route template, method and status",
            ["route", "method", "status"],
        ),
        "duration": Histogram(
            "orb_http_request_duration_seconds",
            "Time from receiving a request to sending its last byte",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
        ),
        "uploaded": Counter(
            "orb_uploaded_bytes",
            "Bytes of upload bodies received",
        ),
        "downloaded": Counter(
            "orb_downloaded_bytes",
            "Bytes of file content sent (downloads)",
        ),
    }


def observe_request(environ: dict, status_code: int | None, sent: int) -> None:
    """Count one finished request (called from gunicorn's post_request)."""
    started = environ.get(STARTED_KEY)
    if started is None:
        return

    route = environ.get(ROUTE_KEY, UNMATCHED_ROUTE)
    method = environ.get("REQUEST_METHOD", "-")
    instruments = _instruments()
    instruments["requests"].labels(
        route, method, str(status_code or 0)
    ).inc()
    instruments["duration"].labels(route, method).observe(
        time.monotonic() - started
    )
    counted = environ.get(INPUT_KEY)
    if route == UPLOAD_ROUTE and method == "POST" and counted is not None:
        instruments["uploaded"].inc(counted.count)

    if route.endswith("/content") and method == "GET" and sent:
        instruments["downloaded"].inc(sent)


@bp.get("/metrics")
def show_metrics() -> Response:
    """Answer with every metric in the Prometheus text format."""
    from prometheus_client import CONTENT_TYPE_LATEST
    from prometheus_client import CollectorRegistry
    from prometheus_client import generate_latest

    _instruments()
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROC_VARIABLE)
    if directory:
        registry.register(_WorkerFiles(Path(directory)))
    else:
        registry.register(_Families(_process_families))

    registry.register(_Families(_state_families(current_app)))
    return Response(
        generate_latest(registry), content_type=CONTENT_TYPE_LATEST
    )


def _process_families() -> list:
    from prometheus_client import REGISTRY

    return list(REGISTRY.collect())


class _WorkerFiles:
    """Merge the samples every worker wrote to its files.

    Like prometheus-client's MultiProcessCollector, except that a file a
    worker has only just created (still empty) is skipped rather than
    failing the whole scrape.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for path in self.directory.glob("*.db"):
            try:
                if path.stat().st_size > 0:
                    files.append(str(path))
            except FileNotFoundError:
                continue

        return MultiProcessCollector.merge(files, accumulate=True)


class _Families:
    """A collector that yields families computed by a callable or list."""

    def __init__(self, source) -> None:
        self.source = source

    def collect(self):
        families = self.source() if callable(self.source) else self.source
        yield from families


def _state_families(app) -> list:
    from prometheus_client.core import CounterMetricFamily
    from prometheus_client.core import GaugeMetricFamily

    settings = app.config["ORB_SETTINGS"]
    families = []
    stored = _stored_counts()
    if stored is not None:
        files, blobs, size = stored
        families += [
            GaugeMetricFamily("orb_files", "File records stored", files),
            GaugeMetricFamily("orb_blobs", "Distinct blobs stored", blobs),
            GaugeMetricFamily(
                "orb_stored_bytes", "Bytes of all stored blobs", size
            ),
        ]

    leader = read_state(settings)
    families += [
        GaugeMetricFamily(
            "orb_leader_registered",
            "1 when this node is registered with the Leader",
            1 if leader.get("state") == "registered" else 0,
        ),
        CounterMetricFamily(
            "orb_leader_heartbeat_failures",
            "Heartbeats to the Leader that failed since start",
            leader.get("heartbeats_failed") or 0,
        ),
    ]
    pending = _signaling_pending()
    if pending is not None:
        families.append(
            GaugeMetricFamily(
                "orb_signaling_events_pending",
                "Events recorded but not yet delivered to Signaling",
                pending,
            )
        )

    return families


def _stored_counts() -> tuple[int, int, int] | None:
    try:
        files = db.session.scalar(select(func.count(FileRecord.id)))
        blobs, size = db.session.execute(
            select(
                func.count(Blob.sha256), func.coalesce(func.sum(Blob.size), 0)
            )
        ).one()
    except Exception:
        db.session.rollback()
        log.warning("Metrics could not count stored files", exc_info=True)
        return None

    return int(files), int(blobs), int(size)


def _signaling_pending() -> int | None:
    try:
        pending = events.status_summary(True)["pending"]
    except Exception:
        db.session.rollback()
        log.warning(
            "Metrics could not read the Signaling outbox", exc_info=True
        )
        return None

    return int(pending) if pending is not None else None
