"""Schema-driven fuzzing: schemathesis against a live Orb on PostgreSQL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_TOKEN = "fuzz-write-token-0123456789"
MAX_EXAMPLES = os.environ.get("ORB_FUZZ_EXAMPLES", "15")
MAX_SECONDS = os.environ.get("ORB_FUZZ_SECONDS", "75")
# A download's body is opaque bytes in whatever type was uploaded: only its
# status, headers and content type are checked against the document.
CONFIG = """
[[operations]]
include-operation-id = ["get_content", "head_content"]
checks.response_schema_conformance.enabled = false
"""
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def test_fuzz_finds_no_server_error_and_no_drift(make_server, tmp_path):
    """Each generated request gets a documented, non-5xx, schema-true answer."""
    orb = make_server(
        "postgresql", ORB_API_TOKENS=f"fuzzer:{FUZZ_TOKEN}:write"
    )
    st = Path(sys.executable).with_name("st")
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(fuzzable(orb)))
    command = [
        str(st),
        "--config-file",
        str(config),
        "run",
        str(schema),
        "--url",
        orb.url,
        "--header",
        f"Authorization: Bearer {FUZZ_TOKEN}",
        "--checks",
        CHECKS,
        "--max-examples",
        MAX_EXAMPLES,
        "--max-time",
        MAX_SECONDS,
        "--workers",
        "2",
        "--request-timeout",
        "30",
        "--no-color",
        "--output-truncate",
        "true",
    ]
    try:
        result = subprocess.run(
            command,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=float(MAX_SECONDS) + 120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("schemathesis did not finish in its time budget")

    if result.returncode != 0:
        pytest.fail(
            "schemathesis found problems:\n"
            + result.stdout[result.stdout.find("FAILURES"):][:8000]
            + result.stderr[-2000:],
            pytrace=False,
        )


def fuzzable(orb) -> dict:
    """Return the served document, raw uploads limited to octet-stream.

    The document rightly says a raw upload may have any content type, and
    a download answers with it. schemathesis would then invent types such
    as application/yaml and try to parse the random bytes it gets back, a
    failure of the tool rather than of Orb.
    """
    document = orb.get("/api/v1/openapi.json").json()
    upload = document["paths"]["/api/v1/files"]["post"]["requestBody"]
    del upload["content"]["*/*"]
    return document

