"""Registration with the cluster Leader, end to end with real gunicorn."""

import os
import signal
import socket
import tempfile
from pathlib import Path

import pytest
from conftest import database_env
from leaderstandin import LeaderStandIn
from orbserver import OrbServer
from orbserver import child_pids
from orbserver import free_port
from orbserver import wait_until

LEADER_ENV = {
    "LEADER_HEARTBEAT_INTERVAL": "1",
    "LEADER_RETRY_INTERVAL": "1",
    "ORB_WORKERS": "2",
}


def leader_state(orb: OrbServer) -> dict:
    return orb.get("/status").json()["leader"]


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True

    return False


@pytest.fixture(scope="module")
def registered(request, workroot):
    """Return (orb, leader): a PostgreSQL-backed Orb registered with it."""
    leader = LeaderStandIn(free_port()).start()
    workdir = Path(tempfile.mkdtemp(dir=workroot))
    orb = OrbServer(
        workdir,
        {
            **database_env("postgresql", request),
            **LEADER_ENV,
            "CLUSTER_LEADER_URL": leader.url,
        },
    )
    try:
        orb.start()
        yield orb, leader
    finally:
        orb.stop()
        leader.stop()


def test_registration_body(registered):
    """The node registers with exactly API.md's body."""
    orb, leader = registered
    wait_until(lambda: leader.count() >= 1, 30, what="a registration")
    version = orb.get("/").json()["version"]
    assert leader.bodies()[0] == {
        "node_name": "orb",
        "node_type": "orb",
        "instance_key": "orb_main",
        "host": "127.0.0.1",
        "port": orb.port,
        "additional": {"version": version, "api": "/api/v1"},
    }


def test_heartbeats_repeat(registered):
    """The same POST repeats every heartbeat interval."""
    orb, leader = registered
    seen = leader.count()
    wait_until(lambda: leader.count() >= seen + 3, 30, what="3 heartbeats")
    bodies = leader.bodies()
    assert all(body == bodies[0] for body in bodies)


def test_status_shows_registration_from_every_worker(registered):
    """Every worker's /status shows the registrar's true state."""
    orb, leader = registered
    wait_until(
        lambda: leader_state(orb)["heartbeats_ok"] >= 1,
        30,
        what="a counted heartbeat",
    )
    for _ in range(10):
        state = leader_state(orb)
        assert state["url"] == leader.url
        assert state["state"] == "registered"
        assert state["registered_at"].endswith("Z")
        assert state["last_heartbeat_at"].endswith("Z")
        assert state["heartbeats_ok"] >= 1
        assert state["last_error"] is None
        assert "pid" not in state

    first = leader_state(orb)["heartbeats_ok"]
    wait_until(
        lambda: leader_state(orb)["heartbeats_ok"] >= first + 2,
        30,
        what="the heartbeat count to grow",
    )


def test_heartbeats_survive_sighup(registered):
    """Reloading workers with SIGHUP does not stop the heartbeats."""
    orb, leader = registered
    old_workers = child_pids(orb.process.pid)
    os.kill(orb.process.pid, signal.SIGHUP)
    wait_until(
        lambda: (
            child_pids(orb.process.pid).isdisjoint(old_workers)
            and len(child_pids(orb.process.pid)) == 2
        ),
        60,
        what="new workers",
    )
    seen = leader.count()
    wait_until(lambda: leader.count() >= seen + 3, 30, what="heartbeats")
    wait_until(lambda: orb.get("/ready").status_code == 200, 30, what="/ready")
    assert leader_state(orb)["state"] == "registered"


def test_heartbeats_survive_killed_worker(registered):
    """A worker killed with SIGKILL is replaced; heartbeats go on."""
    orb, leader = registered
    workers = child_pids(orb.process.pid)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: (
            victim not in child_pids(orb.process.pid)
            and len(child_pids(orb.process.pid)) == 2
        ),
        60,
        what="a replacement worker",
    )
    seen = leader.count()
    wait_until(lambda: leader.count() >= seen + 3, 30, what="heartbeats")
    assert leader_state(orb)["state"] == "registered"
    assert orb.process.poll() is None


def test_reregisters_after_leader_restart(registered):
    """When the Leader goes and comes back, the node registers again."""
    orb, leader = registered
    registered_at = leader_state(orb)["registered_at"]
    leader.stop()
    lost = wait_until(
        lambda: (
            leader_state(orb)["state"] in ("lost", "waiting")
            and leader_state(orb)
        ),
        30,
        what="the Leader to be missed",
    )
    assert lost["last_error"]
    assert orb.get("/ready").status_code == 200

    seen = leader.count()
    leader.start()
    wait_until(lambda: leader.count() > seen, 30, what="a new registration")
    state = wait_until(
        lambda: (
            leader_state(orb)["state"] == "registered" and leader_state(orb)
        ),
        30,
        what="registered again",
    )
    assert state["registered_at"] > registered_at
    assert state["heartbeats_failed"] >= 1
    assert leader.bodies()[-1]["instance_key"] == "orb_main"


def test_standalone_without_leader_url(make_server):
    """Without CLUSTER_LEADER_URL the node runs standalone and says so once."""
    orb = make_server("postgresql", **LEADER_ENV)
    state = leader_state(orb)
    assert state["state"] == "disabled"
    assert state["url"] is None
    assert state["registered_at"] is None
    for _ in range(4):
        orb.get("/status")
    lines = [
        line
        for line in orb.log_text().splitlines()
        if "standalone" in line.lower()
    ]
    assert len(lines) == 1, lines


def test_leader_required_waits_before_binding(make_server):
    """ORB_LEADER_REQUIRED=1 binds no socket until registration."""
    port = free_port()
    orb = make_server(
        "postgresql",
        start=False,
        CLUSTER_LEADER_URL=f"http://127.0.0.1:{port}",
        ORB_LEADER_REQUIRED="1",
        **LEADER_ENV,
    )
    orb.spawn()
    wait_until(
        lambda: "waiting for Leader registration" in orb.log_text(),
        60,
        what="the Leader wait",
    )
    assert refuses_connections(orb.port)
    assert orb.process.poll() is None

    leader = LeaderStandIn(port).start()
    try:
        wait_until(
            lambda: orb._answers("/ready"), 60, what="/ready after the Leader"
        )
        assert leader.count() >= 1
        assert leader_state(orb)["state"] == "registered"
    finally:
        leader.stop()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_leader_wait_aborts(make_server, sig):
    """SIGTERM or SIGINT while waiting ends start-up, non-zero, clearly."""
    orb = make_server(
        "sqlite",
        start=False,
        CLUSTER_LEADER_URL=f"http://127.0.0.1:{free_port()}",
        ORB_LEADER_REQUIRED="1",
        **LEADER_ENV,
    )
    orb.spawn()
    wait_until(
        lambda: "waiting for Leader registration" in orb.log_text(),
        60,
        what="the Leader wait",
    )
    os.kill(orb.process.pid, sig)
    status = orb.process.wait(30)
    assert status != 0
    assert refuses_connections(orb.port)
    output = orb.output()
    assert (
        f"{sig.name} received while waiting for Leader registration" in output
    )
    assert "aborted" in output
    assert "Traceback" not in output


def test_leader_password_never_shown(make_server, leader):
    """A password in CLUSTER_LEADER_URL reaches neither /status nor logs."""
    url = leader.url.replace("http://", "http://orb:s3cret-pw@")
    orb = make_server("sqlite", CLUSTER_LEADER_URL=url, **LEADER_ENV)
    wait_until(lambda: leader.count() >= 2, 30, what="heartbeats")
    status = orb.get("/status")
    assert "s3cret-pw" not in status.text
    assert status.json()["leader"]["state"] == "registered"
    assert status.json()["leader"]["url"].startswith("http://orb:")

    assert orb.stop() == 0
    assert "Leader registrar stopped" in orb.log_text()
    assert "s3cret-pw" not in orb.log_text()
    assert "s3cret-pw" not in orb.output()
