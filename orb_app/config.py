"""Read, validate and hold Orb's configuration.

Every variable Orb understands is read here and nowhere else. Values come
from the process environment first; a `.native_env` file fills in what the
environment leaves unset. A bad value raises `ConfigError` whose message
names the variable, so start-up can stop with one clear line.
"""

import os
import re
import socket
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

from dotenv import dotenv_values
from sqlalchemy.engine import URL
from sqlalchemy.engine import make_url

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONTAINER_APP_ROOT = Path("/opt/lunaricorn/orb")
CONTAINER_LOG_DIR = Path("/opt/lunaricorn/orb_data/logs")
GIB = 1024**3

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration variable holds a value Orb cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class ApiToken:
    """One entry of ORB_API_TOKENS; `token` is the secret itself."""

    name: str
    token: str
    scope: str

    def __repr__(self) -> str:
        return f"ApiToken(name={self.name!r}, scope={self.scope!r})"


@dataclass(frozen=True)
class Settings:
    """Validated configuration of one Orb process."""

    api_port: int = 8080
    workers: int = 2
    threads: int = 8
    leader_url: str = ""
    leader_retry_interval: float = 5.0
    leader_heartbeat_interval: float = 30.0
    leader_required: bool = False
    leader_timeout: float = 5.0
    node_name: str = "orb"
    node_type: str = "orb"
    node_key: str = "orb_main"
    node_host: str = ""
    signaling_host: str = ""
    signaling_push_port: int = 5557
    signaling_timeout_ms: int = 3000
    signaling_max_attempts: int = 20
    signaling_backoff_ms: int = 500
    event_retention_days: float = 7.0
    database_url: str = field(default="", repr=False)
    db_backend: str = "sqlite"
    db_schema: str = "lunaricorn"
    data_dir: Path = Path("tmp/data")
    storage_dir: Path = Path("tmp/file_storage")
    log_dir: Path = Path("logs")
    log_level: str = "INFO"
    log_format: str = "text"
    log_max_bytes: int = 100 * 1024 * 1024
    log_backups: int = 10
    graceful_timeout: int = 30
    metrics_dir: Path = Path("tmp/data/run/metrics")
    leader_wait_timeout: float = 600.0
    max_upload_bytes: int = 10 * GIB
    client_timeout: float = 60.0
    api_tokens: tuple[ApiToken, ...] = field(default=(), repr=False)
    in_container: bool = False

    @property
    def signaling_endpoint(self) -> str:
        """Return the ZeroMQ endpoint of Signaling, or "" when disabled."""
        if not self.signaling_host:
            return ""

        return f"tcp://{self.signaling_host}:{self.signaling_push_port}"

    @property
    def safe_database_url(self) -> str:
        """Return the database URL with any password masked."""
        return make_url(self.database_url).render_as_string(
            hide_password=True
        )


def in_container() -> bool:
    """Tell whether this process runs inside a container."""
    if Path("/.dockerenv").exists():
        return True

    try:
        cgroup = Path("/proc/1/cgroup").read_text(errors="replace")
    except OSError:
        return False

    return any(
        marker in cgroup for marker in ("docker", "kubepods", "containerd")
    )


def read_environment(env_file: str | None = None) -> dict[str, str]:
    """Merge the process environment over the `.native_env` file."""
    path = env_file
    if path is None:
        path = os.environ.get("ORB_ENV_FILE", str(PROJECT_ROOT / ".native_env"))

    values: dict[str, str] = {}
    if path and Path(path).is_file():
        values = {
            key: value or ""
            for key, value in dotenv_values(path).items()
        }

    values.update(os.environ)
    return values


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build `Settings` from variables, raising `ConfigError` on bad ones."""
    if env is None:
        env = read_environment()

    reader = _Reader(env)
    container = in_container()
    data_dir = reader.path(
        "ORB_DATA_DIR",
        CONTAINER_APP_ROOT / "data" if container else Path("tmp/data"),
    )
    backend, database_url, schema = _database(reader, data_dir)

    return Settings(
        api_port=reader.integer("ORB_API_PORT", 8080, 1, 65535),
        workers=reader.integer("ORB_WORKERS", 2, 1, 64),
        threads=reader.integer("ORB_THREADS", 8, 1, 256),
        leader_url=_leader_url(reader),
        leader_retry_interval=reader.number("LEADER_RETRY_INTERVAL", 5.0),
        leader_heartbeat_interval=reader.number(
            "LEADER_HEARTBEAT_INTERVAL", 30.0
        ),
        leader_required=reader.flag("ORB_LEADER_REQUIRED", False),
        leader_timeout=reader.number("ORB_LEADER_TIMEOUT", 5.0),
        node_type=reader.word("ORB_NODE_TYPE", "orb"),
        node_key=reader.word("ORB_NODE_KEY", "orb_main"),
        node_host=reader.text("ORB_NODE_HOST", socket.gethostname()),
        signaling_host=reader.text("SIGNALING_HOST", ""),
        signaling_push_port=reader.integer(
            "SIGNALING_PUSH_PORT", 5557, 1, 65535
        ),
        signaling_timeout_ms=reader.integer(
            "ORB_SIGNALING_TIMEOUT_MS", 3000, 10, 600_000
        ),
        signaling_max_attempts=reader.integer(
            "ORB_SIGNALING_MAX_ATTEMPTS", 20, 1, 1_000_000
        ),
        signaling_backoff_ms=reader.integer(
            "ORB_SIGNALING_BACKOFF_MS", 500, 1, 30_000
        ),
        event_retention_days=reader.number("ORB_EVENT_RETENTION_DAYS", 7.0),
        database_url=database_url,
        db_backend=backend,
        db_schema=schema,
        data_dir=data_dir,
        storage_dir=reader.path(
            "ORB_STORAGE_DIR",
            CONTAINER_APP_ROOT / "file_storage"
            if container
            else Path("tmp/file_storage"),
        ),
        log_dir=reader.path(
            "ORB_LOG_DIR", CONTAINER_LOG_DIR if container else Path("logs")
        ),
        log_level=reader.choice(
            "ORB_LOG_LEVEL",
            "INFO",
            ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
            upper=True,
        ),
        log_format=reader.choice("ORB_LOG_FORMAT", "text", ("text", "json")),
        log_max_bytes=reader.integer(
            "ORB_LOG_MAX_BYTES", 100 * 1024 * 1024, 1024, 2**40
        ),
        log_backups=reader.integer("ORB_LOG_BACKUPS", 10, 0, 1000),
        graceful_timeout=reader.integer("ORB_GRACEFUL_TIMEOUT", 30, 1, 86400),
        metrics_dir=reader.path(
            "PROMETHEUS_MULTIPROC_DIR", data_dir / "run" / "metrics"
        ),
        leader_wait_timeout=reader.number("ORB_LEADER_WAIT_TIMEOUT", 600.0),
        max_upload_bytes=reader.integer(
            "ORB_MAX_UPLOAD_BYTES", 10 * GIB, 0, 2**62
        ),
        client_timeout=reader.number("ORB_CLIENT_TIMEOUT", 60.0),
        api_tokens=_api_tokens(reader),
        in_container=container,
    )


def _leader_url(reader: "_Reader") -> str:
    url = reader.text("CLUSTER_LEADER_URL", "").rstrip("/")
    if not url:
        return ""

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "CLUSTER_LEADER_URL", "must be an http:// or https:// URL"
        )

    return url


def _database(reader: "_Reader", data_dir: Path) -> tuple[str, str, str]:
    schema = reader.text("db_schema", "lunaricorn")
    if not _SCHEMA_RE.match(schema):
        raise ConfigError(
            "db_schema", "must be a lowercase SQL identifier ([a-z_][a-z0-9_]*)"
        )

    explicit = reader.text("DATABASE_URL", "")
    if explicit:
        try:
            url = make_url(explicit)
        except Exception:
            raise ConfigError("DATABASE_URL", "is not an SQLAlchemy URL") from None

        backend = url.get_backend_name()
        if backend not in ("postgresql", "sqlite"):
            raise ConfigError(
                "DATABASE_URL", "must be a postgresql:// or sqlite:// URL"
            )

        return backend, explicit, schema

    host = reader.text("db_host", "")
    backend = reader.choice(
        "db_type", "postgresql" if host else "sqlite", ("postgresql", "sqlite")
    )
    if backend == "sqlite":
        path = (data_dir / "orb.sqlite3").resolve()
        return backend, f"sqlite:///{path}", schema

    for name in ("db_host", "db_user", "db_name"):
        if not reader.text(name, ""):
            raise ConfigError(name, "is required when db_type is postgresql")

    url = URL.create(
        "postgresql+psycopg2",
        username=reader.text("db_user", ""),
        password=reader.text("db_password", "") or None,
        host=host,
        port=reader.integer("db_port", 5432, 1, 65535),
        database=reader.text("db_name", ""),
    )
    return backend, url.render_as_string(hide_password=False), schema


def _api_tokens(reader: "_Reader") -> tuple[ApiToken, ...]:
    raw = reader.text("ORB_API_TOKENS", "")
    tokens: list[ApiToken] = []
    seen: set[str] = set()
    for position, entry in enumerate(filter(None, raw.split(",")), 1):
        parts = entry.strip().split(":")
        if len(parts) != 3 or not all(parts):
            raise ConfigError(
                "ORB_API_TOKENS",
                f"entry {position} is not name:token:scope",
            )

        name, token, scope = parts
        if scope not in ("read", "write"):
            raise ConfigError(
                "ORB_API_TOKENS",
                f"entry {position} ({name}) has scope {scope!r}, "
                "not read or write",
            )

        if token in seen:
            raise ConfigError(
                "ORB_API_TOKENS", f"entry {position} ({name}) repeats a token"
            )

        seen.add(token)
        tokens.append(ApiToken(name=name, token=token, scope=scope))

    return tuple(tokens)


class _Reader:
    """Typed access to raw variables; each failure names its variable."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        value = self.env.get(name)
        return default if value is None else value.strip()

    def word(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
            raise ConfigError(name, "must be 1-64 of A-Z a-z 0-9 _ . -")

        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.text(name, "")
        if not value:
            return default

        try:
            number = int(value.replace("_", ""))
        except ValueError:
            raise ConfigError(name, f"{value!r} is not a whole number") from None

        if not low <= number <= high:
            raise ConfigError(name, f"must be between {low} and {high}")

        return number

    def number(self, name: str, default: float) -> float:
        value = self.text(name, "")
        if not value:
            return default

        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"{value!r} is not a number") from None

        if not 0 < number < 10**7:
            raise ConfigError(name, "must be a positive number")

        return number

    def flag(self, name: str, default: bool) -> bool:
        value = self.text(name, "").lower()
        if name not in self.env:
            return default

        if value in _TRUE:
            return True

        if value in _FALSE:
            return False

        raise ConfigError(name, "must be 1 or 0 (true or false)")

    def choice(
        self,
        name: str,
        default: str,
        allowed: tuple[str, ...],
        upper: bool = False,
    ) -> str:
        value = self.text(name, "") or default
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)}")

        return value

    def path(self, name: str, default: Path) -> Path:
        value = self.text(name, "")
        return (Path(value) if value else default).expanduser().resolve()
