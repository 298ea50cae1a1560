"""The container image, run.sh and compose.yaml, checked without Docker."""

import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from orbserver import ROOT
from orbserver import free_port
from orbserver import wait_until

CONTAINER_ROOT = "/opt/lunaricorn"
CONTAINER_PATHS = {
    "ORB_DATA_DIR": "/opt/lunaricorn/orb/data",
    "ORB_STORAGE_DIR": "/opt/lunaricorn/orb/file_storage",
    "ORB_LOG_DIR": "/opt/lunaricorn/orb_data/logs",
}
# Variables run.sh maps to the container's own port and mounts instead of
# passing them through.
NOT_PASSED = {"ORB_API_PORT", "PROMETHEUS_MULTIPROC_DIR", *CONTAINER_PATHS}

STANDIN_DOCKER = """#!/usr/bin/env bash
# Record each call, one JSON argv per line; images exist once built.
set -euo pipefail
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" \\
  >>"$DOCKER_CALLS"
case "$1 ${2:-}" in
  "image inspect") [ -f "$DOCKER_STATE/built" ] ;;
  "container inspect") [ -f "$DOCKER_STATE/running" ] ;;
  "build "*) touch "$DOCKER_STATE/built" ;;
  "run "*) touch "$DOCKER_STATE/running"; echo 0123456789ab ;;
  "rm "*) rm -f "$DOCKER_STATE/running" ;;
esac
"""


def instructions(path: Path) -> list[tuple[str, str]]:
    """Return a Dockerfile's (INSTRUCTION, arguments), continuations joined."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))

    return found


def dockerfile_env() -> dict[str, str]:
    """Return the variables the Dockerfile's ENV lines set."""
    env = {}
    for keyword, rest in instructions(ROOT / "Dockerfile"):
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value

    return env


def dockerfile_json(keyword: str) -> list[str]:
    """Return the exec-form argument list of a Dockerfile instruction."""
    rest = [rest for key, rest in instructions(ROOT / "Dockerfile") if key == keyword]
    assert len(rest) == 1, keyword
    return json.loads(rest[0])


def healthcheck_argv() -> list[str]:
    """Return the exec-form command of the Dockerfile's HEALTHCHECK."""
    rest = dict(instructions(ROOT / "Dockerfile"))["HEALTHCHECK"]
    options, _, command = rest.partition(" CMD ")
    assert options.startswith("--")
    return json.loads(command)


def example_variables() -> set[str]:
    """Return every variable named in .native_env_example, set or commented."""
    text = (ROOT / ".native_env_example").read_text()
    return set(re.findall(r"^#? ?([A-Za-z_][A-Za-z0-9_]*)=", text, re.M))


def test_dockerfile_passes_hadolint():
    """hadolint finds nothing to say about the Dockerfile."""
    result = subprocess.run(
        [shutil.which("hadolint") or "hadolint", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_scripts_pass_shellcheck():
    """run.sh and every script in scripts/ and .ci/ are shellcheck-clean."""
    scripts = [ROOT / "run.sh"]
    for folder in ("scripts", ".ci"):
        scripts += sorted(
            path for path in (ROOT / folder).iterdir() if path.is_file()
        )
    result = subprocess.run(
        [shutil.which("shellcheck") or "shellcheck", *map(str, scripts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_the_layout_the_cluster_expects():
    """Base image, paths, port, volumes, user, health check and command."""
    steps = instructions(ROOT / "Dockerfile")
    keywords = [keyword for keyword, _ in steps]
    arguments = dict(reversed(steps))
    assert arguments["FROM"] == "python:3.13.5-slim"
    assert keywords.count("FROM") == 1
    assert arguments["WORKDIR"] == "/opt/lunaricorn/orb/app"
    assert arguments["EXPOSE"] == "8080"
    assert json.loads(arguments["VOLUME"]) == [
        "/opt/lunaricorn/orb/data",
        "/opt/lunaricorn/orb/file_storage",
    ]
    user = [rest for keyword, rest in steps if keyword == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    assert "-r requirements.txt" in arguments["RUN"]
    health = healthcheck_argv()
    assert health[0] == "python"
    assert "/health" in health[-1] and "curl" not in arguments["HEALTHCHECK"]
    assert dockerfile_json("CMD") == [
        "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"
    ]
    assert {
        name: dockerfile_env()[name] for name in CONTAINER_PATHS
    } == CONTAINER_PATHS


def test_dockerignore_keeps_local_things_out():
    """Only the application is sent to the build, never tests or data."""
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {
        "requirements.txt", "wsgi.py", "gunicorn.conf.py", "orb_app",
        "migrations",
    }
    assert {"**/__pycache__", "**/*.pyc", "**/*.log"} <= set(lines)


def test_native_env_example_names_every_variable():
    """Each variable config.py reads is listed in .native_env_example."""
    source = (ROOT / "orb_app" / "config.py").read_text()
    read = set(re.findall(r'reader\.\w+\(\s*"([A-Za-z_][A-Za-z0-9_]*)"', source))
    read |= set(re.findall(r'\(\s*"(db_\w+|DATABASE_URL)"', source))
    assert read - example_variables() == set()
    text = (ROOT / ".native_env_example").read_text()
    for name in example_variables():
        line = re.search(rf"^#? ?{name}=", text, re.M).start()
        above = text[:line].rstrip("\n").splitlines()[-1]
        assert above.startswith("#"), name


def test_gitignore_keeps_the_tmp_folders_only():
    """Local settings, logs and tmp contents are ignored; tmp folders stay."""
    ignored = ".native_env\nlogs/orb_api.log\ntmp/x\ntmp/data/orb.sqlite3\n"
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        cwd=ROOT,
        input=ignored + "tmp/data/.gitkeep\ntmp/file_storage/.gitkeep\n",
        capture_output=True,
        text=True,
    )
    assert result.stdout == ignored


def run_script(tmp_path: Path, env_file: Path, calls: Path) -> str:
    """Run run.sh with the stand-in docker first on PATH; return its output."""
    bin_dir = tmp_path / "bin"
    state = tmp_path / "state"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(STANDIN_DOCKER)
    docker.chmod(docker.stat().st_mode | stat.S_IXUSR)
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORB_", "db_", "CLUSTER_", "SIGNALING_"))
        and key not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
        and not key.startswith("LEADER_")
    }
    environment.update(
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        DOCKER_CALLS=str(calls),
        DOCKER_STATE=str(state),
        ORB_ENV_FILE=str(env_file),
    )
    result = subprocess.run(
        ["bash", str(ROOT / "run.sh")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_run_sh_passes_port_mounts_and_every_variable(tmp_path):
    """run.sh builds once, replaces the container, and passes everything."""
    dirs = {
        "ORB_DATA_DIR": tmp_path / "host data",
        "ORB_STORAGE_DIR": tmp_path / "host storage",
        "ORB_LOG_DIR": tmp_path / "host logs",
    }
    values = {
        name: f"value-of-{name.lower()}"
        for name in example_variables() - NOT_PASSED
    }
    values["db_password"] = "s3cret with spaces"
    env_file = tmp_path / "native_env"
    env_file.write_text(
        "# settings\n"
        + "".join(f'{name}="{value}"\n' for name, value in values.items())
        + "".join(f"{name}={path}\n" for name, path in dirs.items())
        + "ORB_API_PORT=9999\n"
    )
    calls = tmp_path / "calls.jsonl"

    first = run_script(tmp_path, env_file, calls)
    second = run_script(tmp_path, env_file, calls)

    argvs = [json.loads(line) for line in calls.read_text().splitlines()]
    builds = [argv for argv in argvs if argv[0] == "build"]
    runs = [argv for argv in argvs if argv[0] == "run"]
    removals = [argv for argv in argvs if argv[0] == "rm"]
    assert len(builds) == 1 and builds[0][-1] == str(ROOT)
    assert len(runs) == 2 and len(removals) == 1
    assert "http://localhost:8001" in first and "http://localhost:8001" in second
    for path in dirs.values():
        assert path.is_dir()

    run = runs[-1]
    pairs = list(zip(run, run[1:]))
    assert ("-p", "8001:8080") in pairs
    mounts = {value for flag, value in pairs if flag == "-v"}
    assert mounts == {
        f"{dirs[name]}:{CONTAINER_PATHS[name]}" for name in CONTAINER_PATHS
    }
    passed = dict(
        value.split("=", 1) for flag, value in pairs if flag == "-e"
    )
    assert passed == values
    assert run[-1] == "lunaricorn/orb:latest"


def test_compose_runs_orb_after_a_healthy_postgres():
    """compose.yaml: PostgreSQL 15 with a health check, named volumes, .env."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    postgres, orb = services["postgres"], services["orb"]
    assert postgres["image"] == "postgres:15"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert orb["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert orb["build"] == "."
    assert orb["ports"] == ["${ORB_PUBLISH_PORT:-8001}:8080"]
    assert [entry["path"] for entry in orb["env_file"]] == [".env"]
    assert orb["environment"]["db_host"] == "postgres"
    volumes = [
        volume.split(":")[0]
        for service in services.values()
        for volume in service["volumes"]
    ]
    assert set(volumes) == set(compose["volumes"])
    targets = {volume.split(":")[1] for volume in orb["volumes"]}
    assert targets == set(CONTAINER_PATHS.values())


def test_container_command_serves_health_natively(tmp_path):
    """The image's CMD and HEALTHCHECK, run here under a stand-in root."""
    root = tmp_path / "root"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ORB_", "db_", "CLUSTER_", "SIGNALING_"))
        and key not in ("DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
        and not key.startswith("LEADER_")
    }
    for name, value in dockerfile_env().items():
        if value.startswith(CONTAINER_ROOT):
            value = str(root) + value
        env[name] = value
    port = free_port()
    env.update(
        ORB_API_PORT=str(port),
        ORB_ENV_FILE="",
        PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    )
    for name in CONTAINER_PATHS:
        Path(env[name]).mkdir(parents=True)

    output = tmp_path / "gunicorn.out"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            dockerfile_json("CMD"),
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        def healthy() -> bool:
            assert process.poll() is None, output.read_text()
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except requests.RequestException:
                return False
            return answer.status_code == 200

        wait_until(healthy, 60, what="/health")
        check = healthcheck_argv()
        probe = subprocess.run(check, env=env, capture_output=True, timeout=30)
        assert probe.returncode == 0, probe.stderr

        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    log_dir = Path(env["ORB_LOG_DIR"])
    assert "Starting Orb" in (log_dir / "orb_api.log").read_text()
    assert (Path(env["ORB_DATA_DIR"]) / "orb.sqlite3").is_file()
    assert (Path(env["ORB_STORAGE_DIR"]) / "blobs").is_dir()
