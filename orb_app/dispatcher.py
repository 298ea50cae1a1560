"""Deliver outbox events to Signaling, in commit order, at least once.

Every gunicorn worker runs one `Dispatcher` thread, started after the fork.
The thread tries about once a second to take the dispatcher lock: on
PostgreSQL a session-level advisory lock on a connection of its own (one
dispatcher for every node sharing the database), on SQLite an exclusive
`flock` on a file in ORB_DATA_DIR (one per node). Only the holder delivers;
when it dies its lock goes with its connection or process, and another
worker takes over within a second or so.

The holder sends the oldest pending event over a ZeroMQ REQ socket and
waits for the answer. Only `"status": "success"` with no `eid` or a
non-negative one counts as delivered. Anything else is retried after an
exponential backoff (ORB_SIGNALING_BACKOFF_MS doubling, at most 30 s), and
the queue waits behind it, so events leave in commit order. An event
refused ORB_SIGNALING_MAX_ATTEMPTS times is parked as `failed` and the
queue moves on. A timeout says nothing about the event, only about the
peer, so it is retried without counting towards parking; the socket that
timed out is closed and a new one made, since a REQ socket cannot send
twice.
"""

import fcntl
import json
import logging
import os
import threading
import time
from datetime import timedelta

import zmq
from sqlalchemy import create_engine
from sqlalchemy import select
from sqlalchemy import text
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from . import events
from .config import Settings
from .database import engine_options
from .models import OutboxEvent
from .models import utcnow

log = logging.getLogger(__name__)

BACKOFF_CAP_S = 30.0
LOCK_RETRY_S = 1.0
CRASH_PAUSE_S = 5.0
IDLE_POLL_S = 0.2
HEARTBEAT_S = 5.0
LOCK_CHECK_S = 2.0
PRUNE_EVERY_S = 600.0
BATCH = 100
LOCK_FILE_NAME = "signaling.lock"


def is_delivered(reply: object) -> bool:
    """Tell whether a Signaling reply counts as delivery (see API.md)."""
    if not isinstance(reply, dict) or reply.get("status") != "success":
        return False

    if "eid" not in reply:
        return True

    eid = reply["eid"]
    return isinstance(eid, int) and not isinstance(eid, bool) and eid >= 0


def backoff_seconds(settings: Settings, failures: int) -> float:
    """Return the wait after `failures` failures in a row."""
    base = settings.signaling_backoff_ms / 1000
    return min(BACKOFF_CAP_S, base * 2 ** min(failures - 1, 30))


class Channel:
    """One REQ socket to Signaling, replaced after every timeout."""

    def __init__(
        self, endpoint: str, timeout_ms: int, stopping: threading.Event
    ) -> None:
        self.endpoint = endpoint
        self.timeout_ms = timeout_ms
        self.stopping = stopping
        self.context = zmq.Context()
        self.socket: zmq.Socket | None = None

    def request(self, body: dict) -> tuple[object, str | None]:
        """Send `body`; return (reply, None) or (None, what went wrong)."""
        if self.socket is None:
            self.socket = self.context.socket(zmq.REQ)
            self.socket.setsockopt(zmq.LINGER, 0)
            self.socket.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
            self.socket.connect(self.endpoint)

        try:
            self.socket.send(json.dumps(body).encode())
        except zmq.Again:
            self.reset()
            return None, f"send timed out after {self.timeout_ms} ms"

        if not self._wait_for_reply():
            self.reset()
            return None, f"no reply within {self.timeout_ms} ms"

        raw = self.socket.recv()
        try:
            return json.loads(raw), None
        except ValueError:
            return raw.decode(errors="replace")[:200], None

    def _wait_for_reply(self) -> bool:
        deadline = time.monotonic() + self.timeout_ms / 1000
        while not self.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False

            if self.socket.poll(min(100, int(left * 1000) + 1), zmq.POLLIN):
                return True

        return False

    def reset(self) -> None:
        """Drop the socket; the next request makes a fresh one."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def close(self) -> None:
        """Close the socket and the context."""
        self.reset()
        self.context.term()


class _PgLock:
    """A session-level advisory lock on a connection of its own."""

    def __init__(self, settings: Settings) -> None:
        options = engine_options(settings)
        self.engine = create_engine(
            settings.database_url,
            poolclass=NullPool,
            connect_args=options["connect_args"],
        )
        self.key = events.lock_key(settings, "dispatcher")
        self.connection = None

    def acquire(self) -> bool:
        try:
            if self.connection is None:
                self.connection = self.engine.connect()
                self.connection.commit()

            taken = self.connection.scalar(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
            )
            self.connection.commit()
            return bool(taken)
        except Exception:
            self._drop()
            return False

    def alive(self) -> bool:
        try:
            self.connection.scalar(text("SELECT 1"))
            self.connection.commit()
            return True
        except Exception:
            self._drop()
            return False

    def release(self) -> None:
        try:
            self.connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
            )
            self.connection.commit()
        except Exception:
            self._drop()

    def close(self) -> None:
        self._drop()
        self.engine.dispose()

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                pass
            self.connection = None


class _FileLock:
    """An exclusive `flock` on a file in ORB_DATA_DIR."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.data_dir / "run" / LOCK_FILE_NAME
        self.fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False

        self.fd = fd
        return True

    def alive(self) -> bool:
        return self.fd is not None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        self.release()


class Dispatcher:
    """The background thread that delivers outbox events."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.endpoint = settings.signaling_endpoint
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._healthy = True
        self._state = "connected"
        self._last_error: str | None = None
        self._published_at = 0.0

    def start(self) -> None:
        """Start contending for the dispatcher lock in a daemon thread."""
        self._thread = threading.Thread(
            target=self._run, name="orb-signaling", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait a little for it."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        if self.settings.db_backend == "postgresql":
            lock = _PgLock(self.settings)
        else:
            lock = _FileLock(self.settings)

        try:
            while not self._stopping.is_set():
                try:
                    self._contend(lock)
                except Exception:
                    log.exception("Signaling dispatcher failed; restarting")
                    self._stopping.wait(CRASH_PAUSE_S)
        finally:
            lock.close()

    def _contend(self, lock) -> None:
        if not lock.acquire():
            self._stopping.wait(LOCK_RETRY_S)
            return

        try:
            self._deliver_while_holding(lock)
        finally:
            lock.release()

    def _deliver_while_holding(self, lock) -> None:
        log.info(
            "Signaling dispatcher started in worker %d for %s",
            os.getpid(),
            self.endpoint,
        )
        options = dict(engine_options(self.settings))
        if "pool_size" in options:
            options.update(pool_size=1, max_overflow=1)
        engine = create_engine(self.settings.database_url, **options)
        channel = Channel(
            self.endpoint, self.settings.signaling_timeout_ms, self._stopping
        )
        self._publish(force=True)
        try:
            self._loop(lock, engine, channel)
        finally:
            channel.close()
            engine.dispose()
            log.info("Signaling dispatcher in worker %d stopped", os.getpid())

    def _loop(self, lock, engine: Engine, channel: Channel) -> None:
        checked = time.monotonic()
        pruned = float("-inf")
        prune_every = min(
            PRUNE_EVERY_S,
            max(1.0, self.settings.event_retention_days * 86400 / 2),
        )
        database_failing = False
        while not self._stopping.is_set():
            now = time.monotonic()
            if now - checked > LOCK_CHECK_S:
                if not lock.alive():
                    log.warning("Signaling dispatcher lost its lock")
                    return
                checked = now

            try:
                if now - pruned > prune_every:
                    self._prune(engine)
                    pruned = now

                busy = self._deliver_batch(engine, channel)
                if database_failing:
                    log.info("Signaling dispatcher reaches the database again")
                    database_failing = False
            except Exception as error:
                if not database_failing:
                    log.warning(
                        "Signaling dispatcher cannot use the database: %s",
                        type(error).__name__,
                    )
                    database_failing = True
                busy = False
                self._stopping.wait(LOCK_RETRY_S)

            self._publish()
            if not busy:
                self._stopping.wait(IDLE_POLL_S)

    def _deliver_batch(self, engine: Engine, channel: Channel) -> bool:
        """Send pending events in id order; no transaction stays open.

        The events are detached before any is sent, so reading one never
        starts a transaction that a slow peer would hold open (on SQLite
        that would block every upload).
        """
        with Session(engine, expire_on_commit=False) as session:
            batch = list(
                session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.status == "pending")
                    .order_by(OutboxEvent.id)
                    .limit(BATCH)
                )
            )
            session.expunge_all()
            session.rollback()
            for event in batch:
                if self._stopping.is_set():
                    return True

                if not self._deliver_one(session, channel, event):
                    self._stopping.wait(
                        backoff_seconds(self.settings, self._failures)
                    )
                    return True

        return bool(batch)

    def _deliver_one(
        self, session: Session, channel: Channel, event: OutboxEvent
    ) -> bool:
        reply, error = channel.request(events.push_body(event))
        if self._stopping.is_set() and error is not None:
            return False

        if error is None and is_delivered(reply):
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id == event.id)
                .values(
                    status="delivered",
                    delivered_at=utcnow(),
                    next_attempt_at=None,
                    last_error=None,
                )
            )
            session.commit()
            self._succeeded()
            return True

        refused = error is None
        if refused:
            error = f"Signaling answered {json.dumps(reply)}"[:500]

        self._failed(error)
        attempts = event.attempts + (1 if refused else 0)
        park = refused and attempts >= self.settings.signaling_max_attempts
        delay = backoff_seconds(self.settings, self._failures)
        session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event.id)
            .values(
                status="failed" if park else "pending",
                attempts=attempts,
                last_error=error,
                next_attempt_at=None
                if park
                else utcnow() + timedelta(seconds=delay),
            )
        )
        session.commit()
        event.attempts = attempts
        if park:
            log.error(
                "Parked Signaling event %s (outbox id %d, %s) after %d "
                "refusals: %s",
                event.event_id,
                event.id,
                event.event_type,
                attempts,
                error,
            )

        return park

    def _succeeded(self) -> None:
        self._failures = 0
        if not self._healthy:
            log.info("Signaling delivery to %s recovered", self.endpoint)
            self._healthy = True

        self._set("connected", None)

    def _failed(self, error: str) -> None:
        self._failures += 1
        if self._healthy:
            log.warning(
                "Signaling delivery to %s stopped working: %s",
                self.endpoint,
                error,
            )
            self._healthy = False

        self._set("retrying", error)

    def _set(self, state: str, error: str | None) -> None:
        changed = state != self._state
        self._state = state
        if error is not None:
            self._last_error = error
        self._publish(force=changed or error is not None)

    def _prune(self, engine: Engine) -> None:
        with Session(engine) as session:
            removed = events.prune_delivered(
                session, self.settings.event_retention_days
            )

        if removed:
            log.info("Pruned %d delivered Signaling events", removed)

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._published_at < HEARTBEAT_S:
            return

        self._published_at = now
        try:
            events.write_state(self.settings, self._state, self._last_error)
        except OSError as error:
            log.warning("Cannot write Signaling state: %s", error)


_dispatcher: Dispatcher | None = None


def start(settings: Settings) -> None:
    """Start this worker's dispatcher thread, if Signaling is configured."""
    global _dispatcher

    if not settings.signaling_host or _dispatcher is not None:
        return

    _dispatcher = Dispatcher(settings)
    _dispatcher.start()


def stop() -> None:
    """Stop this worker's dispatcher thread, if any."""
    if _dispatcher is not None:
        _dispatcher.stop()
