"""Schema-driven fuzzing: schemathesis against a live Orb on PostgreSQL."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ_TOKEN = "fuzz-write-token-0123456789"
MAX_EXAMPLES = os.environ.get("ORB_FUZZ_EXAMPLES", "15")
MAX_SECONDS = os.environ.get("ORB_FUZZ_SECONDS", "75")
# A download answers with whatever content type the fuzzer uploaded (YAML,
# XML...), and schemathesis would try to parse those bytes; its body is
# opaque bytes, so only its status, headers and content type are checked.
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
    command = [
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{orb.url}/api/v1/openapi.json",
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

    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
