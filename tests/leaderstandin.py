"""A stand-in for the cluster Leader that records what nodes send it."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer


class LeaderStandIn:
    """Answers GET / with 200 and POST /v1/imalive like the real Leader."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.received: list[tuple[float, dict]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "LeaderStandIn":
        """Listen on the port (again, after a stop)."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(200, {"service": "leader"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"null")
                if self.path != "/v1/imalive":
                    self._answer(404, {"error": "not found"})
                    return

                with standin.lock:
                    standin.received.append((time.monotonic(), body))
                self._answer(200, {"status": "received"})

            def _answer(self, status: int, body: dict) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def bodies(self) -> list[dict]:
        """Return every /v1/imalive body received so far."""
        with self.lock:
            return [body for _, body in self.received]

    def count(self) -> int:
        """Return how many /v1/imalive posts arrived."""
        with self.lock:
            return len(self.received)
