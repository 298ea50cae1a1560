"""Graceful shutdown of a worker: finish transfers in time, abort the rest.

On SIGTERM gunicorn's worker stops accepting and waits up to
`graceful_timeout` for its connections; after that the master kills it.
A transfer killed that way would leave a half-written temporary file.
So each worker tracks the sockets of requests in progress and, shortly
before the grace period ends, shuts them down: a blocked read or send
then fails at once, the upload code discards its pending blob, and the
worker exits on its own before the master's deadline.
"""

import logging
import signal
import socket
import threading
import time

log = logging.getLogger(__name__)

SOCKET_KEY = "gunicorn.socket"

_in_flight: set[socket.socket] = set()
_lock = threading.Lock()
_term_received = threading.Event()
_stopping = threading.Event()


def abort_delay(graceful_timeout: float) -> float:
    """Return how long after SIGTERM unfinished transfers are aborted."""
    margin = min(2.0, graceful_timeout / 4)
    return max(graceful_timeout - margin, 0.0)


def begin_request(environ: dict) -> None:
    """Track the connection of a request that starts."""
    sock = environ.get(SOCKET_KEY)
    if sock is None:
        return

    with _lock:
        _in_flight.add(sock)

    if _stopping.is_set():
        _abort(sock)


def end_request(environ: dict) -> None:
    """Forget the connection of a request that finished."""
    sock = environ.get(SOCKET_KEY)
    if sock is None:
        return

    with _lock:
        _in_flight.discard(sock)


def install(graceful_timeout: float) -> None:
    """Chain an abort timer in front of the worker's SIGTERM handler."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame) -> None:
        if callable(previous):
            previous(signum, frame)

        if not _term_received.is_set():
            _term_received.set()
            threading.Thread(
                target=_abort_later,
                args=(abort_delay(graceful_timeout),),
                name="orb-shutdown",
                daemon=True,
            ).start()

    signal.signal(signal.SIGTERM, on_term)


class ShutdownMiddleware:
    """WSGI middleware registering each request's connection."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        begin_request(environ)
        return self.app(environ, start_response)


def _abort_later(delay: float) -> None:
    with _lock:
        count = len(_in_flight)

    log.info(
        "Worker shutting down: %d requests in flight, aborting any left "
        "after %.1fs",
        count,
        delay,
    )
    time.sleep(delay)
    _stopping.set()
    with _lock:
        left = list(_in_flight)

    if left:
        log.warning("Aborting %d unfinished requests at shutdown", len(left))

    for sock in left:
        _abort(sock)


def _abort(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
