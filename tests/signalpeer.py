"""A real ZeroMQ peer standing in for the Lunaricorn Signaling server.

It binds a ROUTER socket, which a REQ client cannot tell from a REP one,
so that it may also leave a request unanswered (a REP socket could not
take the next request then). It records every message and answers as a
policy says: a reply dict, or None for silence.
"""

import itertools
import json
import threading

import zmq


class SignalPeer:
    """A Signaling push endpoint on 127.0.0.1 that records what it gets."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.received: list[dict] = []
        self.accepted: list[dict] = []
        self.policy = self.accept
        self._eids = itertools.count(1)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()

    def accept(self, message: dict) -> dict:
        """Answer as a healthy Signaling server does."""
        return {"status": "success", "eid": next(self._eids)}

    def start(self) -> "SignalPeer":
        """Bind and serve in a thread until `stop`."""
        self._stopping.clear()
        self._bound.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._bound.wait(10):
            raise AssertionError(f"peer could not bind {self.endpoint}")
        return self

    def stop(self) -> None:
        """Close the socket; the port is free again afterwards."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _serve(self) -> None:
        context = zmq.Context()
        socket = context.socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.bind(self.endpoint)
        self._bound.set()
        try:
            while not self._stopping.is_set():
                if not socket.poll(50, zmq.POLLIN):
                    continue

                frames = socket.recv_multipart()
                envelope, body = frames[:-1], frames[-1]
                message = json.loads(body)
                with self._lock:
                    self.received.append(message)
                reply = self.policy(message)
                if reply is None:
                    continue

                if _counts_as_delivery(reply):
                    with self._lock:
                        self.accepted.append(message)
                socket.send_multipart([*envelope, json.dumps(reply).encode()])
        finally:
            socket.close(linger=0)
            context.term()

    def accepted_ids(self) -> list[str]:
        """Return the event ids accepted, first acceptance of each only."""
        with self._lock:
            seen: dict[str, None] = {}
            for message in self.accepted:
                seen.setdefault(message["message"]["event_id"])
            return list(seen)

    def accepted_unique(self) -> list[dict]:
        """Return accepted messages without repeats, in acceptance order."""
        with self._lock:
            seen: dict[str, dict] = {}
            for message in self.accepted:
                seen.setdefault(message["message"]["event_id"], message)
            return list(seen.values())

    def received_count(self) -> int:
        """Return how many requests arrived, repeats included."""
        with self._lock:
            return len(self.received)


def _counts_as_delivery(reply: dict) -> bool:
    eid = reply.get("eid", 0)
    if reply.get("status") != "success":
        return False

    return isinstance(eid, int) and eid >= 0
