"""SQL statements per request: record and list reads ask once."""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import database_env
from orbserver import free_port
from sqlalchemy import event

from orb_app import create_app
from orb_app.catalog import read_engine
from orb_app.config import load_settings
from orb_app.extensions import db


def make_app(env: dict, workdir: Path):
    """Return a migrated Orb app on the given database, in this process."""
    settings = load_settings({
        "ORB_ENV_FILE": "",
        "ORB_DATA_DIR": str(workdir / "data"),
        "ORB_STORAGE_DIR": str(workdir / "storage"),
        "ORB_LOG_DIR": str(workdir / "logs"),
        "ORB_THREADS": "3",
        **env,
    })
    app = create_app(settings=settings)
    result = app.test_cli_runner().invoke(args=["orb", "prepare"])
    assert result.exit_code == 0, result.output
    return app


class StatementCounter:
    """Count the SQL statements an engine sends."""

    def __init__(self, *engines) -> None:
        self.engines = engines
        self.statements: list[str] = []

    def __enter__(self) -> "StatementCounter":
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *exc) -> None:
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._count)

    def _count(self, conn, cursor, statement, *args) -> None:
        # SQLite transactions start with an explicit BEGIN IMMEDIATE;
        # PostgreSQL's BEGIN is implicit in the driver. Neither is a query.
        if not statement.startswith("BEGIN"):
            self.statements.append(statement)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded(request, workroot):
    """Return (app, client, record ids) with 101 small files stored."""
    workdir = Path(tempfile.mkdtemp(dir=workroot))
    app = make_app(database_env(request.param, request), workdir)
    client = app.test_client()
    ids = []
    for number in range(101):
        answer = client.post(
            f"/api/v1/files?name=q-{number:03d}.bin", data=os.urandom(64)
        )
        assert answer.status_code == 201, answer.get_json()
        ids.append(answer.get_json()["id"])

    yield app, client, ids
    with app.app_context():
        db.engine.dispose()
        read_engine().dispose()


def _statements(app, client, path: str) -> list[str]:
    with app.app_context():
        engines = (db.engine, read_engine())
    with StatementCounter(*engines) as counter:
        answer = client.get(path)
        assert answer.status_code in (200, 206), answer.get_data()[:300]
        answer.close()
    return counter.statements


def test_record_get_is_one_query(seeded):
    """Reading one record sends one SELECT."""
    app, client, ids = seeded
    assert len(_statements(app, client, f"/api/v1/files/{ids[0]}")) == 1


def test_list_pages_are_one_query_each(seeded):
    """A page of 100, and the page after it, send one SELECT each."""
    app, client, ids = seeded
    assert len(_statements(app, client, "/api/v1/files?limit=100")) == 1

    first = client.get("/api/v1/files?limit=100")
    cursor = first.get_json()["next_cursor"]
    assert cursor
    path = f"/api/v1/files?limit=100&cursor={cursor}"
    assert len(_statements(app, client, path)) == 1


def test_content_get_is_one_query(seeded):
    """Downloading a file (whole or a range) sends one SELECT."""
    app, client, ids = seeded
    path = f"/api/v1/files/{ids[1]}/content"
    assert len(_statements(app, client, path)) == 1

    with app.app_context():
        engines = (db.engine, read_engine())
    with StatementCounter(*engines) as counter:
        answer = client.get(path, headers={"Range": "bytes=1-5"})
        assert answer.status_code == 206
        answer.close()
    assert len(counter.statements) == 1


def test_pool_matches_worker_threads(seeded):
    """PostgreSQL pools hold one connection per worker thread, unpinged."""
    app, client, ids = seeded
    with app.app_context():
        engine = db.engine
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite connections are not pooled by size")

    assert engine.pool.size() == 3
    assert not engine.pool._pre_ping


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def test_restarted_database_is_used_at_once(workroot):
    """The first request after a PostgreSQL restart already succeeds.

    Pooled connections are not pinged before use; a connection the server
    closed must still be noticed at checkout and replaced, not used.
    """
    pg_bin = os.environ.get("ORB_TEST_PG_BIN")
    if not pg_bin:
        pytest.skip("no PostgreSQL: run the suite with scripts/test")

    cluster = Path(tempfile.mkdtemp(prefix="orb-pg-restart-"))
    cluster.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(cluster, "postgres", "postgres")
    data = cluster / "data"
    port = free_port()
    pg_ctl = [f"{pg_bin}/pg_ctl", "-D", str(data), "-l",
              str(cluster / "log"), "-w", "-t", "60", "-o",
              f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1 "
              "-c fsync=off"]
    subprocess.run(
        _as_postgres([f"{pg_bin}/initdb", "-D", str(data), "-U", "orb",
                      "--auth=trust", "--no-sync"]),
        check=True, capture_output=True,
    )
    subprocess.run(_as_postgres([*pg_ctl, "start"]), check=True,
                   capture_output=True)
    try:
        url = f"postgresql+psycopg2://orb@127.0.0.1:{port}/postgres"
        app = make_app({"DATABASE_URL": url},
                       Path(tempfile.mkdtemp(dir=workroot)))
        client = app.test_client()
        created = client.post("/api/v1/files?name=r.bin", data=b"restart")
        assert created.status_code == 201
        path = f"/api/v1/files/{created.get_json()['id']}"
        assert client.get(path).status_code == 200

        subprocess.run(_as_postgres([*pg_ctl, "-m", "fast", "restart"]),
                       check=True, capture_output=True)
        assert client.get(path).status_code == 200
        with app.app_context():
            db.engine.dispose()
            read_engine().dispose()
    finally:
        subprocess.run(_as_postgres([*pg_ctl, "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(cluster, ignore_errors=True)


def test_database_rendering_matches_python(seeded):
    """PostgreSQL's rendering of a list page equals models.file_json's."""
    from orb_app import listing
    from orb_app.models import file_json

    app, client, ids = seeded
    client.patch(
        f"/api/v1/files/{ids[0]}",
        json={"name": "ünïcode \"quoted\" \\ name", "metadata": {"k": "v\n"}},
    )
    with app.app_context():
        query = listing.page_query(200, None, None, None, None)
        with listing.read_connection() as connection:
            rows = list(connection.execute(query))
            if connection.dialect.name == "postgresql":
                rendered = list(
                    connection.scalars(listing._rendered_by_database(query))
                )
            else:
                rendered = [listing._render(row) for row in rows]

    assert len(rows) == 101
    assert [json.loads(text) for text in rendered] == [
        file_json(row) for row in rows
    ]
