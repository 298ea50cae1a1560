"""gunicorn settings for Orb.

Values come from the environment through `orb_app.config`; a bad value
stops here, before any socket is bound. Hooks call into `orb_app.server`.
"""

from orb_app import guards
from orb_app import server

settings = server.settings_or_exit()

# Socket
bind = f"0.0.0.0:{settings.api_port}"
backlog = 2048

# Workers: threads serve requests; a long transfer holds one thread only.
worker_class = "gthread"
workers = settings.workers
threads = settings.threads
worker_connections = 1000
max_requests = 0

# Timeouts: `timeout` is the worker heartbeat, not a per-request limit, so a
# multi-gigabyte upload may take as long as it needs.
timeout = 60
graceful_timeout = settings.graceful_timeout
keepalive = 5

# Requests
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
# WSGI cannot tell "_" from "-" in a header name, so gunicorn would drop an
# X-Orb-Meta-my_key header silently; refuse the request instead.
header_map = "refuse"

# Logging: everything goes through the handlers set up in on_starting.
logger_class = "orb_app.server.GunicornLogger"
accesslog = "-"
access_log_format = (
    '%(h)s "%(r)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
)
loglevel = settings.log_level.lower()

# Process
proc_name = f"orb:{settings.node_key}"
control_socket_disable = True
# sendfile stays unset: gunicorn reads any value here, even True, as
# --no-sendfile, and downloads would then be copied through Python.

# Hardening: no version banner, problem documents for refused requests.
guards.hide_server_banner()
guards.answer_wire_errors_as_problems()


def on_starting(arbiter):
    """Set up logging, migrate, clean up and start the Leader registrar."""
    server.on_starting(settings)


def on_exit(arbiter):
    """Stop the Leader registrar."""
    server.on_exit()


def post_worker_init(worker):
    """Arm the shutdown abort and start the Signaling dispatcher."""
    server.post_worker_init(settings)


def post_request(worker, req, environ, resp):
    """Count the request in the metrics."""
    server.post_request(environ, resp)


def child_exit(arbiter, worker):
    """Drop the metrics files of the exited worker."""
    server.child_exit(worker.pid)


def worker_exit(arbiter, worker):
    """Stop the Signaling dispatcher thread of this worker."""
    server.worker_exit()


def when_ready(arbiter):
    """Make reads from a client that goes quiet time out."""
    guards.limit_client_reads(arbiter.LISTENERS, settings.client_timeout)
