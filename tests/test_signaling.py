"""Signaling: every committed change reaches a real ZeroMQ peer, in order."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from orbserver import ROOT
from orbserver import free_port
from orbserver import wait_until
from signalpeer import SignalPeer

BACKENDS = ["sqlite", "postgresql"]
NODE_KEY = "orb_sig_test"
DELIVERY_TIMEOUT_S = 90
MESSAGE_KEYS = {
    "type",
    "client_id",
    "event_type",
    "message",
    "timestamp",
    "source",
    "creator-id",
    "tags",
}
BODY_KEYS = {
    "event_id",
    "id",
    "name",
    "size",
    "sha256",
    "content_type",
    "node",
    "at",
}


@pytest.fixture
def peer():
    """Return a Signaling peer on a free port, not yet started."""
    standin = SignalPeer(free_port())
    yield standin
    standin.stop()


@pytest.fixture
def make_orb(make_server, peer):
    """Start Orb pointed at the peer, with short timeouts and backoff."""

    def make(backend: str, start: bool = True, **env):
        settings = {
            "SIGNALING_HOST": "127.0.0.1",
            "SIGNALING_PUSH_PORT": str(peer.port),
            "ORB_SIGNALING_TIMEOUT_MS": "5000",
            "ORB_SIGNALING_BACKOFF_MS": "50",
            "ORB_NODE_KEY": NODE_KEY,
            **env,
        }
        return make_server(backend, start=start, **settings)

    return make


def signaling(orb) -> dict:
    """Return the `signaling` block of /status."""
    return orb.get("/status").json()["signaling"]


def wait_delivered(orb, peer, count: int) -> list[dict]:
    """Wait until the peer accepted `count` distinct events; return them."""
    wait_until(
        lambda: len(peer.accepted_ids()) >= count,
        DELIVERY_TIMEOUT_S,
        what=f"{count} events at the peer",
    )
    wait_until(
        lambda: signaling(orb)["delivered"] >= count,
        DELIVERY_TIMEOUT_S,
        what=f"{count} events marked delivered",
    )
    return peer.accepted_unique()


def upload(orb, name: str, expected: list, **kwargs) -> dict:
    """Upload a small file and note the FileOp_new it must emit."""
    data = os.urandom(64) + name.encode()
    response = orb.upload(
        data, name=name, headers={"Content-Type": "text/plain"}, **kwargs
    )
    assert response.status_code == 201, response.text
    record = response.json()
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    expected.append(("FileOp_new", record))
    return record


def rename(orb, record: dict, name: str, expected: list) -> dict:
    """PATCH a file's name and note the FileOp_update it must emit."""
    response = orb.patch(
        record["links"]["self"],
        json={"name": name},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text
    expected.append(("FileOp_update", response.json()))
    return response.json()


def remove(orb, record: dict, expected: list) -> None:
    """DELETE a file and note the FileOp_delete it must emit."""
    response = orb.delete(record["links"]["self"])
    assert response.status_code == 204, response.text
    expected.append(("FileOp_delete", record))


def assert_messages(messages: list[dict], expected: list) -> None:
    """Check each message field by field against the changes made."""
    assert len(messages) == len(expected)
    for message, (event_type, record) in zip(messages, expected):
        assert set(message) == MESSAGE_KEYS
        assert message["type"] == "push"
        assert message["client_id"] == NODE_KEY
        assert message["event_type"] == event_type
        assert isinstance(message["timestamp"], float)
        assert message["source"] == "orb"
        assert message["creator-id"] == "orb"
        assert message["tags"] == "{orb}"
        body = message["message"]
        assert set(body) == BODY_KEYS
        assert body["id"] == record["id"]
        assert body["name"] == record["name"]
        assert body["size"] == record["size"]
        assert body["sha256"] == record["sha256"]
        assert body["content_type"] == record["content_type"]
        assert body["node"] == NODE_KEY
        assert body["at"].endswith("Z")
        if event_type != "FileOp_delete":
            assert body["at"] == record["updated_at"]

    event_ids = [message["message"]["event_id"] for message in messages]
    assert len(set(event_ids)) == len(event_ids)


def mixed_operations(orb, count: int, expected: list) -> None:
    """Make `count` changes: uploads, renames and deletes, interleaved."""
    live: list[dict] = []
    step = 0
    while len(expected) < count:
        step += 1
        if step % 4 == 3 and live:
            live[0] = rename(orb, live[0], f"renamed-{step}.txt", expected)
        elif step % 4 == 0 and len(live) > 1:
            remove(orb, live.pop(), expected)
        else:
            live.append(upload(orb, f"file-{step}.txt", expected))


def run_flask(orb, *args: str) -> subprocess.CompletedProcess:
    """Run `flask --app wsgi ...` against the server's configuration."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORB_", "db_", "SIGNALING_"))
        and key != "DATABASE_URL"
    }
    environment.update(orb.env)
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_changes_arrive_in_order(make_orb, peer, backend):
    """100 uploads, renames and deletes arrive in order, as API.md says."""
    peer.start()
    orb = make_orb(backend)
    expected: list = []
    mixed_operations(orb, 100, expected)

    messages = wait_delivered(orb, peer, 100)

    assert_messages(messages, expected)
    state = signaling(orb)
    assert state["pending"] == 0
    assert state["failed"] == 0
    assert state["delivered"] == 100
    assert state["state"] == "connected"
    assert state["endpoint"] == peer.endpoint
    assert state["last_delivered_at"].endswith("Z")


@pytest.mark.parametrize("backend", BACKENDS)
def test_peer_down_then_started(make_orb, peer, backend):
    """50 changes made while the peer is down all arrive once it starts."""
    orb = make_orb(backend)
    expected: list = []
    mixed_operations(orb, 50, expected)
    wait_until(
        lambda: signaling(orb)["state"] == "retrying",
        DELIVERY_TIMEOUT_S,
        what="state retrying",
    )
    assert signaling(orb)["pending"] == 50

    peer.start()
    messages = wait_delivered(orb, peer, 50)

    assert_messages(messages, expected)
    wait_until(
        lambda: signaling(orb)["state"] == "connected",
        DELIVERY_TIMEOUT_S,
        what="state connected",
    )
    log = orb.log_text()
    assert log.count("Signaling delivery to") == 2
    assert "stopped working" in log
    assert "recovered" in log


def test_peer_stopped_and_restarted_midway(make_orb, peer, capsys):
    """Changes made before, during and after a peer outage all arrive."""
    peer.start()
    orb = make_orb("postgresql", ORB_SIGNALING_TIMEOUT_MS="500")
    expected: list = []
    mixed_operations(orb, 40, expected)
    wait_delivered(orb, peer, 40)

    peer.stop()
    mixed_operations(orb, 80, expected)
    wait_until(
        lambda: signaling(orb)["state"] == "retrying",
        DELIVERY_TIMEOUT_S,
        what="state retrying",
    )
    pending = signaling(orb)["pending"]
    peer.start()
    mixed_operations(orb, 120, expected)
    messages = wait_delivered(orb, peer, 120)

    assert_messages(messages, expected)
    with capsys.disabled():
        print(
            f"\nsignaling restart run: {len(expected)} changes made, "
            f"{pending} pending when the peer came back, "
            f"peer received {peer.received_count()} requests, "
            f"accepted {len(messages)} distinct events in order, "
            f"/status delivered={signaling(orb)['delivered']}"
        )


@pytest.mark.parametrize("backend", BACKENDS)
def test_misbehaving_peer_is_retried(make_orb, peer, backend):
    """Refused or unanswered events are retried; uploads answer meanwhile.

    The peer answers `status: error`, then `success` with `eid: -1`, then
    nothing at all, each until released; every phase must end with its
    events delivered in order.
    """
    bad = {}
    peer.policy = lambda message: (
        bad["reply"] if bad else peer.accept(message)
    )
    peer.start()
    orb = make_orb(backend, ORB_SIGNALING_TIMEOUT_MS="300")
    expected: list = []
    replies = [
        {"status": "error", "message": "storage down"},
        {"status": "success", "eid": -1},
        None,
    ]
    for reply in replies:
        bad["reply"] = reply
        tried = peer.received_count()
        accepted = len(peer.accepted)
        upload(orb, "first.txt", expected)
        wait_until(
            lambda: peer.received_count() >= tried + 3,
            DELIVERY_TIMEOUT_S,
            what=f"three tries answered {reply}",
        )

        for number in range(3):
            upload(orb, f"meanwhile-{number}.txt", expected)
        assert len(peer.accepted) == accepted
        state = signaling(orb)
        assert state["state"] == "retrying"
        assert state["last_error"]

        bad.clear()
        messages = wait_delivered(orb, peer, len(expected))

        assert_messages(messages, expected)
        assert signaling(orb)["failed"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_poisoned_event_is_parked_and_retried(make_orb, peer, backend):
    """An event refused forever is parked, the rest flow, retry sends it."""
    released = []

    def policy(message: dict):
        if message["message"]["name"] == "poison.txt" and not released:
            return {"status": "error"}
        return peer.accept(message)

    peer.policy = policy
    peer.start()
    orb = make_orb(backend, ORB_SIGNALING_MAX_ATTEMPTS="3")
    expected: list = []
    upload(orb, "before.txt", expected)
    poison = upload(orb, "poison.txt", expected)
    for number in range(3):
        upload(orb, f"after-{number}.txt", expected)

    wait_delivered(orb, peer, 4)
    wait_until(
        lambda: signaling(orb)["failed"] == 1,
        DELIVERY_TIMEOUT_S,
        what="one parked event",
    )
    state = signaling(orb)
    assert state["pending"] == 0
    assert state["delivered"] == 4
    assert "error" in state["last_error"]
    tries = [
        message
        for message in peer.received
        if message["message"]["id"] == poison["id"]
    ]
    assert len(tries) == 3
    event_id = tries[0]["message"]["event_id"]
    assert f"Parked Signaling event {event_id}" in orb.log_text()
    order = [message["message"]["name"] for message in peer.accepted_unique()]
    assert order == ["before.txt", "after-0.txt", "after-1.txt", "after-2.txt"]

    released.append(True)
    result = run_flask(orb, "orb", "events", "retry")
    assert result.returncode == 0, result.stderr
    assert "re-queued 1 parked events" in result.stdout
    messages = wait_delivered(orb, peer, 5)

    assert messages[-1]["message"]["event_id"] == event_id
    assert_messages(messages[-1:], [expected[1]])
    wait_until(
        lambda: signaling(orb)["failed"] == 0
        and signaling(orb)["delivered"] == 5,
        DELIVERY_TIMEOUT_S,
        what="the parked event delivered",
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_pending_events_survive_a_restart(make_orb, peer, backend):
    """Events pending when Orb stops are delivered after it starts again."""
    orb = make_orb(backend)
    expected: list = []
    mixed_operations(orb, 20, expected)
    assert signaling(orb)["pending"] == 20
    assert orb.stop() == 0

    peer.start()
    orb.start()
    messages = wait_delivered(orb, peer, 20)

    assert_messages(messages, expected)


def send_then_hang_up(orb, length: int, sent: int) -> None:
    """Start a raw upload of `length` bytes, send `sent`, and disconnect."""
    address = urlsplit(orb.url)
    with socket.create_connection((address.hostname, address.port)) as raw:
        raw.sendall(
            b"POST /api/v1/files?name=cut.bin HTTP/1.1\r\n"
            + f"Host: {address.netloc}\r\n".encode()
            + f"Content-Length: {length}\r\n".encode()
            + b"Content-Type: application/octet-stream\r\n\r\n"
            + os.urandom(sent)
        )


def test_failed_uploads_emit_nothing(make_orb, peer):
    """A bad digest, a too-large body or a hang-up emits no event.

    These fail before the catalog's transaction begins, the same on both
    backends, so SQLite alone is run.
    """
    peer.start()
    orb = make_orb("sqlite", ORB_MAX_UPLOAD_BYTES="100000")
    wrong = orb.upload(b"abc", headers={"X-Orb-SHA256": "0" * 64})
    assert wrong.status_code == 400
    large = orb.upload(os.urandom(100_001), name="large.bin")
    assert large.status_code == 413
    send_then_hang_up(orb, 90_000, 10_000)
    wait_until(
        lambda: orb.temp_files() == [],
        DELIVERY_TIMEOUT_S,
        what="the cut upload cleaned up",
    )

    expected: list = []
    upload(orb, "good.txt", expected)
    messages = wait_delivered(orb, peer, 1)

    assert_messages(messages, expected)
    assert peer.received_count() == 1
    state = signaling(orb)
    assert (state["pending"], state["delivered"], state["failed"]) == (0, 1, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_deliver_each_event_once(make_orb, peer, backend):
    """Two workers, one dispatcher: no repeats; it moves if its worker dies."""
    peer.start()
    orb = make_orb(backend, ORB_WORKERS="2", ORB_SIGNALING_TIMEOUT_MS="10000")
    names = [f"parallel-{number}.txt" for number in range(60)]
    with ThreadPoolExecutor(4) as pool:
        for response in pool.map(
            lambda name: orb.upload(name.encode(), name=name), names
        ):
            assert response.status_code == 201, response.text

    wait_delivered(orb, peer, 60)

    assert peer.received_count() == 60
    assert sorted(m["message"]["name"] for m in peer.received) == sorted(names)
    assert orb.log_text().count("Signaling dispatcher started") == 1

    state = json.loads(
        (orb.data_dir / "run" / "signaling_state.json").read_text()
    )
    os.kill(state["pid"], signal.SIGKILL)
    expected: list = []
    upload(orb, "after-the-kill.txt", expected)
    messages = wait_delivered(orb, peer, 61)

    assert_messages(messages[-1:], expected)
    assert orb.log_text().count("Signaling dispatcher started") == 2


def test_disabled_records_nothing(server):
    """With SIGNALING_HOST unset, /status says disabled and nothing queues."""
    expected: list = []
    upload(server, "quiet.txt", expected)

    state = signaling(server)
    assert state["state"] == "disabled"
    assert state["endpoint"] is None
    assert (state["pending"], state["delivered"], state["failed"]) == (0, 0, 0)


def test_silent_peer_does_not_hold_the_database(make_orb, peer):
    """Uploads succeed while a request to a silent peer is outstanding.

    Guards a fault where reading a sent event reopened a transaction that
    stayed open while waiting for the reply, which on SQLite held the write
    lock and blocked every upload for as long as the peer kept silent.
    (On PostgreSQL the same fault only held a read transaction open.)
    """
    peer.policy = lambda message: None
    peer.start()
    orb = make_orb("sqlite", ORB_SIGNALING_TIMEOUT_MS="120000")
    expected: list = []
    upload(orb, "unanswered.txt", expected)
    wait_until(
        lambda: peer.received_count() == 1,
        DELIVERY_TIMEOUT_S,
        what="the first request at the peer",
    )

    for number in range(3):
        upload(orb, f"meanwhile-{number}.txt", expected)

    assert peer.received_count() == 1
    assert signaling(orb)["pending"] == 4


def test_two_nodes_sharing_postgresql(make_orb, peer):
    """Two nodes on one database run one dispatcher and repeat nothing."""
    peer.start()
    first = make_orb("postgresql", ORB_WORKERS="1")
    second = make_orb(
        "postgresql",
        ORB_WORKERS="1",
        ORB_NODE_KEY="orb_second",
        DATABASE_URL=first.env["DATABASE_URL"],
    )
    made = {NODE_KEY: [], "orb_second": []}
    for number in range(20):
        for key, orb in ((NODE_KEY, first), ("orb_second", second)):
            response = orb.upload(b"%d" % number, name=f"{key}-{number}")
            assert response.status_code == 201, response.text
            made[key].append(response.json()["id"])

    messages = wait_delivered(first, peer, 40)

    assert peer.received_count() == 40
    for key, ids in made.items():
        mine = [m for m in messages if m["client_id"] == key]
        assert [m["message"]["id"] for m in mine] == ids
        assert {m["message"]["node"] for m in mine} == {key}
    started = (first.log_text() + second.log_text()).count(
        "Signaling dispatcher started"
    )
    assert started == 1


def test_delivered_events_are_pruned(make_orb, peer):
    """Delivered events older than ORB_EVENT_RETENTION_DAYS are deleted."""
    peer.start()
    orb = make_orb("sqlite", ORB_EVENT_RETENTION_DAYS="0.00002")
    expected: list = []
    upload(orb, "short-lived.txt", expected)
    upload(orb, "shorter-lived.txt", expected)
    wait_until(
        lambda: len(peer.accepted_ids()) == 2,
        DELIVERY_TIMEOUT_S,
        what="two events at the peer",
    )

    wait_until(
        lambda: signaling(orb)["delivered"] == 0,
        DELIVERY_TIMEOUT_S,
        what="the delivered events pruned",
    )
    state = signaling(orb)
    assert (state["pending"], state["failed"]) == (0, 0)
    assert "Pruned" in orb.log_text()
