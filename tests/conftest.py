"""Fixtures: real Orb servers (gunicorn) on SQLite and PostgreSQL."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from leaderstandin import LeaderStandIn
from orbserver import OrbServer
from orbserver import create_pg_database
from orbserver import free_port

BACKENDS = ["sqlite", "postgresql"]
TEST_MAX_UPLOAD = 300 * 1024 * 1024


def pytest_configure(config) -> None:
    """Keep tests independent of a developer's own .native_env."""
    os.environ["ORB_ENV_FILE"] = ""


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """Return the URL of the throwaway PostgreSQL of this run."""
    url = os.environ.get("ORB_TEST_PG_URL")
    if not url:
        pytest.skip("no PostgreSQL: run the suite with scripts/test")

    return url


@pytest.fixture(scope="session")
def workroot():
    """Return a directory for this run's servers, removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="orb-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def database_env(backend: str, request) -> dict[str, str]:
    """Return the variables that point a server at a fresh database."""
    if backend == "sqlite":
        return {"db_type": "sqlite"}

    admin = request.getfixturevalue("pg_admin_url")
    return {"DATABASE_URL": create_pg_database(admin)}


@pytest.fixture
def make_server(request, workroot):
    """Start Orb servers with chosen settings; all are stopped afterwards."""
    servers: list[OrbServer] = []

    def make(backend: str = "sqlite", start: bool = True, **env) -> OrbServer:
        workdir = Path(tempfile.mkdtemp(dir=workroot))
        settings = {**database_env(backend, request), **env}
        server = OrbServer(workdir, settings)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session", params=BACKENDS)
def server(request, workroot):
    """Return a running Orb shared by a test session, per backend."""
    workdir = Path(tempfile.mkdtemp(dir=workroot))
    env = {
        **database_env(request.param, request),
        "ORB_MAX_UPLOAD_BYTES": str(TEST_MAX_UPLOAD),
    }
    orb = OrbServer(workdir, env)
    orb.backend = request.param
    orb.start()
    yield orb
    orb.stop()


@pytest.fixture
def leader():
    """Return a running Leader stand-in on a free port."""
    standin = LeaderStandIn(free_port()).start()
    yield standin
    standin.stop()
