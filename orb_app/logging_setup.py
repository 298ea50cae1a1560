"""Log set-up for the whole service, done once in the gunicorn master.

Everything, gunicorn's own error and access logs included, goes to the
root logger: a size-rotated `orb_api.log` that several processes can share,
and a short console format.
"""

import logging
import sys
from datetime import datetime
from pathlib import Path

from concurrent_log_handler import ConcurrentRotatingFileHandler

from .config import Settings
from .request_ids import RequestIdFilter

LOG_FILE_NAME = "orb_api.log"
FILE_FORMAT = (
    "%(asctime)s - %(name)s - %(levelname)s - %(filename)s:%(lineno)d"
    " - %(funcName)s() - %(message)s"
)
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONSOLE_DATE_FORMAT = "%H:%M:%S"


def setup_logging(settings: Settings) -> Path:
    """Install Orb's file and console handlers on the root logger."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    path = settings.log_dir / LOG_FILE_NAME
    _set_aside(path)

    file_handler = ConcurrentRotatingFileHandler(
        str(path),
        maxBytes=settings.log_max_bytes,
        backupCount=settings.log_backups,
        encoding="utf-8",
    )
    file_handler.setFormatter(_file_formatter(settings))
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(
        logging.Formatter(CONSOLE_FORMAT, CONSOLE_DATE_FORMAT)
    )

    for handler in (file_handler, console):
        handler.setLevel(settings.log_level)
        handler.addFilter(RequestIdFilter())

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()

    root.addHandler(file_handler)
    root.addHandler(console)
    root.setLevel(settings.log_level)
    logging.captureWarnings(True)
    return path


def _file_formatter(settings: Settings) -> logging.Formatter:
    if settings.log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(name)s %(levelname)s %(filename)s %(lineno)d"
            " %(funcName)s %(process)d %(request_id)s %(message)s",
            rename_fields={"levelname": "level", "asctime": "time"},
        )

    return logging.Formatter(FILE_FORMAT)


def _set_aside(path: Path) -> None:
    """Rename a log left by an earlier run, stamping it with the time."""
    if not path.exists() or path.stat().st_size == 0:
        return

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{stamp}-{counter}{path.suffix}")
        counter += 1

    path.rename(target)
