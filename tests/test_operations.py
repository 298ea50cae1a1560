"""Logs, request ids and metrics of a running Orb with several workers."""

import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from orbserver import free_port
from orbserver import wait_until
from prometheus_client.parser import text_string_to_metric_families

ACCESS_LINE = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) '
    r"(?P<bytes>\d+|-) (?P<ms>\d+)ms rid=(?P<rid>\S+)"
)


def log_lines(log_dir: Path) -> list[str]:
    """Return every line of orb_api.log and its rotated files."""
    lines: list[str] = []
    for path in sorted(log_dir.glob("orb_api.log*")):
        lines += path.read_text(encoding="utf-8").splitlines()

    return lines


def get_closed(url: str, **headers) -> requests.Response:
    """GET on a fresh connection, so that any worker may take it."""
    return requests.get(
        url, headers={"Connection": "close", **headers}, timeout=30
    )


def test_rotation_across_four_workers_keeps_every_line_once(make_server):
    """A tiny rotation size under four busy workers loses and repeats none."""
    server = make_server(
        ORB_WORKERS="4",
        ORB_THREADS="4",
        ORB_LOG_MAX_BYTES="2048",
        ORB_LOG_BACKUPS="1000",
        ORB_LOG_FORMAT="json",
    )
    ids = [f"rot-{number}-{uuid.uuid4().hex[:8]}" for number in range(400)]

    def fetch(request_id: str) -> str:
        answer = get_closed(server.url + "/health", **{"X-Request-ID": request_id})
        assert answer.status_code == 200
        return answer.headers["X-Request-ID"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        returned = list(pool.map(fetch, ids))
    assert returned == ids

    assert server.stop() == 0
    files = list(server.log_dir.glob("orb_api.log*"))
    records = [json.loads(line) for line in log_lines(server.log_dir)]
    access = [r for r in records if r["name"] == "gunicorn.access"]
    seen = [r["request_id"] for r in access if r["request_id"] in set(ids)]
    assert len(files) > 5
    assert sorted(seen) == sorted(ids)
    assert len({r["process"] for r in access}) >= 2


def test_log_level_drops_lower_records(make_server):
    """ORB_LOG_LEVEL=WARNING keeps warnings and drops info and access."""
    absent_leader = f"http://127.0.0.1:{free_port()}"
    server = make_server(
        ORB_LOG_LEVEL="WARNING",
        CLUSTER_LEADER_URL=absent_leader,
        LEADER_RETRY_INTERVAL="0.2",
    )
    assert server.get("/health").status_code == 200
    wait_until(
        lambda: "Waiting for Leader" in server.log_text(),
        30,
        what="the Leader warning",
    )
    server.stop()
    text = server.log_text()
    assert "Starting Orb" not in text
    assert "gunicorn.access" not in text
    assert " - INFO - " not in text


def test_request_id_is_kept_or_replaced_and_logged(server):
    """A valid X-Request-ID comes back; anything else gets a fresh id."""
    mine = "client.id_1-" + uuid.uuid4().hex
    kept = server.get("/api/v1/files?limit=1", headers={"X-Request-ID": mine})
    assert kept.status_code == 200
    assert kept.headers["X-Request-ID"] == mine

    for bad in ("has space", "x" * 129, "semi;colon", ""):
        answer = server.get("/health", headers={"X-Request-ID": bad})
        fresh = answer.headers["X-Request-ID"]
        assert fresh != bad
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", fresh)

    missing = server.get("/no/such/path")
    assert missing.status_code == 404
    assert missing.headers["X-Request-ID"]

    line = wait_until(
        lambda: next(
            (line for line in server.log_text().splitlines() if mine in line),
            None,
        ),
        30,
        what="the access line",
    )
    match = ACCESS_LINE.search(line)
    assert match, line
    assert match["method"] == "GET"
    assert match["path"] == "/api/v1/files?limit=1"
    assert match["status"] == "200"
    assert int(match["bytes"]) == len(kept.content)
    assert match["rid"] == mine


def scrape(server) -> dict:
    """Return /metrics as {(name, labels): value}."""
    answer = server.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value

    return samples


def value(samples: dict, name: str, **labels) -> float:
    """Return one sample's value, 0 when absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_add_up_across_workers(make_server):
    """Counts from requests served by different workers are summed."""
    server = make_server(ORB_WORKERS="3", ORB_THREADS="2")
    health = {"route": "/health", "method": "GET", "status": "200"}
    before = scrape(server)
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(
            pool.map(lambda _: get_closed(server.url + "/health"), range(60))
        )
    assert all(answer.status_code == 200 for answer in answers)

    data = os.urandom(300_000)
    created = server.upload(data, name="metrics.bin")
    assert created.status_code == 201
    record = created.json()
    assert server.get(record["links"]["content"]).content == data

    metrics_dir = server.data_dir / "run" / "metrics"
    writers = {
        path.stem.rsplit("_", 1)[-1]
        for path in metrics_dir.glob("counter_*.db")
    }
    assert len(writers) >= 2

    after = scrape(server)
    added = value(after, "orb_http_requests_total", **health) - value(
        before, "orb_http_requests_total", **health
    )
    assert added == 60
    assert value(
        after,
        "orb_http_request_duration_seconds_count",
        route="/health",
        method="GET",
    ) >= 60
    assert value(
        after,
        "orb_http_requests_total",
        route="/api/v1/files",
        method="POST",
        status="201",
    ) == 1
    assert value(after, "orb_uploaded_bytes_total") == len(data)
    assert value(after, "orb_downloaded_bytes_total") == len(data)
    assert value(after, "orb_files") == 1
    assert value(after, "orb_blobs") == 1
    assert value(after, "orb_stored_bytes") == len(data)
    assert value(after, "orb_leader_registered") == 0
    assert value(after, "orb_signaling_events_pending") == 0


def test_metrics_follow_the_registrar(make_server, leader):
    """Leader registered flips 1 then 0, and failed heartbeats count."""
    server = make_server(
        CLUSTER_LEADER_URL=leader.url,
        LEADER_RETRY_INTERVAL="0.2",
        LEADER_HEARTBEAT_INTERVAL="0.2",
    )
    wait_until(
        lambda: value(scrape(server), "orb_leader_registered") == 1,
        30,
        what="registered 1",
    )
    leader.stop()
    samples = wait_until(
        lambda: (lambda s: s if value(s, "orb_leader_registered") == 0 else None)(
            scrape(server)
        ),
        30,
        what="registered 0",
    )
    assert value(samples, "orb_leader_heartbeat_failures_total") >= 1


def test_metrics_directory_is_emptied_at_start(make_server):
    """Samples left by an earlier run are not reported again."""
    server = make_server()
    assert server.get("/health").status_code == 200
    wait_until(
        lambda: value(
            scrape(server),
            "orb_http_requests_total",
            route="/health",
            method="GET",
            status="200",
        )
        >= 1,
        30,
        what="a counted request",
    )
    assert server.stop() == 0

    server.start()
    samples = scrape(server)
    assert value(
        samples,
        "orb_http_requests_total",
        route="/health",
        method="GET",
        status="200",
    ) == 0
