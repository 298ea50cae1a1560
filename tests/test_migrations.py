"""Start-up migration: two nodes at once against one empty database."""

import psycopg2
from orbserver import create_pg_database
from orbserver import wait_until
from sqlalchemy.engine import make_url


def query(url: str, sql: str) -> list[tuple]:
    parts = make_url(url)
    connection = psycopg2.connect(
        host=parts.host,
        port=parts.port,
        user=parts.username,
        dbname=parts.database,
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall()
    finally:
        connection.close()


def test_two_nodes_start_together(make_server, pg_admin_url):
    """Both come up; the schema is migrated once, inside db_schema."""
    url = create_pg_database(pg_admin_url)
    nodes = [
        make_server("postgresql", start=False, DATABASE_URL=url)
        for _ in range(2)
    ]
    for node in nodes:
        node.spawn()
    for node in nodes:
        wait_until(lambda: node._answers("/ready"), 120, what="/ready")

    for node in nodes:
        assert "preparation failed" not in node.log_text()
        status = node.get("/status").json()["database"]
        assert status["schema"] == "lunaricorn"
        assert status["at_head"] is True

    versions = query(url, "SELECT version_num FROM lunaricorn.alembic_version")
    assert len(versions) == 1
    assert (
        versions[0][0]
        == nodes[0].get("/status").json()["database"]["revision"]
    )

    tables = query(
        url,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    assert {schema for schema, _ in tables} == {"lunaricorn"}
    assert {"alembic_version", "orb_blobs", "orb_files"} <= {
        table for _, table in tables
    }
    indexes = query(
        url,
        "SELECT schemaname, indexname FROM pg_indexes "
        "WHERE indexname LIKE 'ix_orb_%'",
    )
    assert {schema for schema, _ in indexes} == {"lunaricorn"}
    assert len(indexes) >= 3

    record = nodes[0].upload(b"shared", name="shared.txt").json()
    assert nodes[1].get(record["links"]["self"]).json()["name"] == "shared.txt"


def test_custom_schema(make_server):
    """db_schema names the schema that holds everything."""
    orb = make_server("postgresql", db_schema="orb_custom")
    url = orb.env["DATABASE_URL"]
    assert orb.get("/status").json()["database"]["schema"] == "orb_custom"
    tables = query(
        url,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    assert {schema for schema, _ in tables} == {"orb_custom"}
    assert {"alembic_version", "orb_blobs", "orb_files"} <= {
        table for _, table in tables
    }
    assert orb.upload(b"x", name="x").status_code == 201
