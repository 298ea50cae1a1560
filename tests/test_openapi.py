"""The OpenAPI document: complete, true to the routes, true to the answers."""

import os

import pytest
from jsonschema import Draft202012Validator
from openapicheck import Checker

from orb_app import create_app
from orb_app.config import load_settings
from orb_app.openapi import DOCUMENT
from orb_app.openapi import flask_path

NOT_OPERATIONS = {"parameters", "summary", "description", "servers"}


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> dict[str, set[str]]:
    """Return the methods of every route of a real app, by OpenAPI path."""
    root = tmp_path_factory.mktemp("routes")
    settings = load_settings(
        {
            "ORB_DATA_DIR": str(root / "data"),
            "ORB_STORAGE_DIR": str(root / "storage"),
            "ORB_LOG_DIR": str(root / "logs"),
        }
    )
    app = create_app(settings=settings)
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue

        methods = found.setdefault(flask_path(rule.rule), set())
        methods.update(rule.methods - {"OPTIONS"})

    return found


def documented_methods(item: dict) -> set[str]:
    """Return the methods of one OpenAPI path item."""
    return {key.upper() for key in item if key not in NOT_OPERATIONS}


def test_every_route_is_documented_with_its_methods(routes):
    """Each Flask rule appears in the document with the same methods."""
    for path, methods in routes.items():
        assert path in DOCUMENT["paths"], f"{path} is not documented"
        documented = documented_methods(DOCUMENT["paths"][path])
        assert documented - {"HEAD"} == methods - {"HEAD"}, path
        if "HEAD" in documented:
            assert "HEAD" in methods, path


def test_every_documented_path_is_routed(routes):
    """No documented path is missing from the app."""
    missing = set(DOCUMENT["paths"]) - set(routes)
    assert missing == set()


def test_served_document_is_openapi_3_1(server):
    """GET /api/v1/openapi.json answers the whole document."""
    response = server.get("/api/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert document["paths"].keys() == DOCUMENT["paths"].keys()
    assert "/api/v1/files/{file_id}/content" in document["paths"]
    for name, schema in document["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)


def test_schemathesis_accepts_the_document(server):
    """schemathesis loads the served document and finds every operation."""
    import schemathesis

    schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
    operations = [
        result.ok() for result in schema.get_all_operations()
    ]
    assert len(operations) >= 11


def test_real_answers_validate(server):
    """Answers to real requests, good and bad, match their schemas."""
    checker = Checker(server.get("/api/v1/openapi.json").json())
    data = os.urandom(3000)
    created = server.upload(
        data, name="doc.bin", headers={"X-Orb-Meta-Owner": "tests"}
    )
    record = created.json()
    one = record["links"]["self"]
    content = record["links"]["content"]
    etag = created.headers["ETag"]
    missing = "/api/v1/files/00000000-0000-4000-8000-000000000000"

    answers = [
        created,
        server.get("/"),
        server.get("/health"),
        server.get("/ready"),
        server.get("/status"),
        server.get("/api/v1/openapi.json"),
        server.get("/api/v1/files", params={"limit": 2}),
        server.get("/api/v1/files", params={"limit": 0}),
        server.get("/api/v1/files", params={"cursor": "forged"}),
        server.get(one),
        server.get("/api/v1/files/not-a-uuid"),
        server.get(missing),
        server.get(content),
        server.head(content),
        server.get(content, headers={"Range": "bytes=0-9"}),
        server.get(content, headers={"Range": "bytes=5000-"}),
        server.get(content, headers={"If-None-Match": etag}),
        server.get(content, headers={"If-Match": '"nope"'}),
        server.patch(one, json={"name": "renamed.bin"}),
        server.patch(one, data="[]", headers={"Content-Type": "text/plain"}),
        server.patch(one, json=[1]),
        server.post("/api/v1/files", data=b"x"),
        server.upload(b"x", headers={"X-Orb-SHA256": "0" * 64}),
        server.delete(one),
        server.delete(one),
    ]
    for answer in answers:
        checker.check(answer)

    assert {answer.status_code for answer in answers} >= {
        200, 201, 204, 206, 304, 400, 404, 412, 415, 416
    }
