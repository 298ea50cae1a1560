"""Configuration: a bad value stops start-up with one line naming it."""

import pytest
from orbserver import free_port

BAD_VALUES = [
    ({"ORB_API_PORT": "abc"}, "ORB_API_PORT"),
    ({"ORB_API_PORT": "70000"}, "ORB_API_PORT"),
    ({"db_type": "oracle"}, "db_type"),
    ({"db_type": "postgresql"}, "db_host"),
    ({"db_type": "postgresql", "db_host": "127.0.0.1"}, "db_user"),
    ({"CLUSTER_LEADER_URL": "ftp://leader.example"}, "CLUSTER_LEADER_URL"),
    ({"CLUSTER_LEADER_URL": "not a url"}, "CLUSTER_LEADER_URL"),
    ({"ORB_WORKERS": "0"}, "ORB_WORKERS"),
    ({"ORB_MAX_UPLOAD_BYTES": "ten"}, "ORB_MAX_UPLOAD_BYTES"),
    ({"ORB_LEADER_REQUIRED": "maybe"}, "ORB_LEADER_REQUIRED"),
    ({"LEADER_HEARTBEAT_INTERVAL": "-1"}, "LEADER_HEARTBEAT_INTERVAL"),
    ({"db_schema": "Bad-Schema"}, "db_schema"),
    ({"DATABASE_URL": "mysql://u@h/d"}, "DATABASE_URL"),
]


@pytest.mark.parametrize(
    "env, variable", BAD_VALUES, ids=[v for _, v in BAD_VALUES]
)
def test_bad_value_stops_start_up(make_server, env, variable):
    """gunicorn exits non-zero with one line naming the variable."""
    port = free_port()
    orb = make_server("sqlite", start=False, ORB_API_PORT=str(port))
    orb.env.update(env)
    if "ORB_API_PORT" in env:
        orb.port = port
    status = orb.spawn().wait(60)

    assert status != 0
    lines = orb.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert variable in lines[0]
    assert "Traceback" not in lines[0]
    assert not orb.log_dir.exists()
    assert "Listening" not in orb.output()


def write_env_file(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_native_env_fills_unset_variables(make_server, tmp_path):
    """`.native_env` supplies what the environment leaves unset."""
    env_file = write_env_file(
        tmp_path / "native_env",
        "# Orb settings\n"
        "ORB_NODE_TYPE=fromfile\n"
        "ORB_NODE_KEY=filekey\n"
        'ORB_NODE_HOST="host-from-file"\n',
    )
    orb = make_server(
        "sqlite", start=False, ORB_ENV_FILE=env_file, ORB_NODE_KEY="envkey"
    )
    orb.env.pop("ORB_NODE_HOST")
    orb.start()

    identity = orb.get("/").json()["node"]
    assert identity == {"name": "orb", "key": "envkey", "type": "fromfile"}
    node = orb.get("/status").json()["node"]
    assert node["host"] == "host-from-file"
    assert node["port"] == orb.port


def test_native_env_bad_value_names_variable(make_server, tmp_path):
    """A bad value from `.native_env` stops start-up just the same."""
    env_file = write_env_file(
        tmp_path / "native_env", "LEADER_RETRY_INTERVAL=soon\n"
    )
    orb = make_server("sqlite", start=False, ORB_ENV_FILE=env_file)
    status = orb.spawn().wait(60)
    assert status != 0
    lines = orb.output().strip().splitlines()
    assert len(lines) == 1, lines
    assert "LEADER_RETRY_INTERVAL" in lines[0]


def test_environment_wins_over_native_env(make_server, tmp_path):
    """A bad value in the file is not read when the environment sets it."""
    port = free_port()
    env_file = write_env_file(
        tmp_path / "native_env", "ORB_API_PORT=notaport\nORB_THREADS=2\n"
    )
    orb = make_server("sqlite", ORB_ENV_FILE=env_file, ORB_API_PORT=str(port))
    assert orb.port == port
    assert orb.get("/health").status_code == 200
