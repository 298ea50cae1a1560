"""A private PostgreSQL cluster a test may stop and start at will."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from orbserver import free_port


def _as_owner(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]

    return command


class PostgresCluster:
    """initdb, start, stop and remove one PostgreSQL cluster."""

    def __init__(self, bin_dir: str) -> None:
        self.bin_dir = Path(bin_dir)
        self.root = Path(tempfile.mkdtemp(prefix="orb-pgtest-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://orb@127.0.0.1:{self.port}/orb"
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            _as_owner([str(self.bin_dir / tool), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=120,
        )

    def create(self) -> "PostgresCluster":
        """Initialise the cluster, start it and create database orb."""
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "orb",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        self.start()
        self._run(
            "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "orb",
            "orb",
        )
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def stop(self) -> None:
        """Stop the server at once, cutting every connection."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"
        )

    def remove(self) -> None:
        """Stop the server if it runs and delete the cluster."""
        subprocess.run(
            _as_owner(
                [
                    str(self.bin_dir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
