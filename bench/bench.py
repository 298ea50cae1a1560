"""Measure Orb beside nginx and a bare Flask route; run it with `bench/run`.

Every pair (Orb, anchor) is measured alternately, A B A B, for a number of
rounds in the same run, and reported as the median ratio Orb / anchor with
its min-max, because the machines this runs on are small and shared.
Everything listens on 127.0.0.1, every load is bounded in time, and every
server started here is stopped by its PID on the way out.
"""

import argparse
import concurrent.futures
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
MIB = 1024 * 1024
RUN_DEADLINE_S = 3 * 3600
TRANSFER_TIMEOUT_S = 600
START_TIMEOUT_S = 90


def main() -> int:
    """Parse the options, run the benchmark and report."""
    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGALRM, _exit_on_signal)
    signal.alarm(RUN_DEADLINE_S)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=_work_root()))
    servers: list[Server] = []
    try:
        return Bench(args, work, servers).run()
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="64 MiB files, 1 round, 3 s loads; nothing appended",
    )
    parser.add_argument("--rounds", type=int, help="rounds per pair (3)")
    parser.add_argument("--size-mib", type=int, help="large file (1024)")
    parser.add_argument("--duration", type=int, help="wrk seconds (10)")
    parser.add_argument(
        "--only",
        choices=["all", "memory", "download", "upload", "split", "wrk",
                 "concurrent"],
        default="all",
        help="run one group only (memory: issue 2's RSS figures)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="append to bench/RESULTS.md even in --quick or --only runs",
    )
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.size_mib = args.size_mib or (64 if args.quick else 1024)
    args.duration = args.duration or (3 if args.quick else 10)
    args.append = args.record or (not args.quick and args.only == "all")
    return args


def _exit_on_signal(signum, frame) -> None:
    raise SystemExit(f"bench: stopped by {signal.Signals(signum).name}")


def _work_root() -> Path:
    path = BENCH / "work"
    path.mkdir(exist_ok=True)
    return path


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    """Poll `predicate` until it is true or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out waiting for {what}")
        time.sleep(0.1)


def http_status(url: str) -> int:
    """Return the status of a GET, or 0 when nothing answers."""
    parts = urllib.parse.urlsplit(url)
    try:
        connection = http.client.HTTPConnection(
            parts.hostname, parts.port, timeout=5
        )
        connection.request("GET", parts.path or "/")
        status = connection.getresponse().status
        connection.close()
        return status
    except OSError:
        return 0


class Server:
    """One server process (and its children), stopped by its PID."""

    def __init__(self, name: str, command: list[str], env: dict, log: Path):
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, ready_url: str) -> "Server":
        """Start the process and wait until `ready_url` answers 200."""
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"bench: {self.name} exited with "
                    f"{self.process.returncode}:\n"
                    + self.log.read_text(errors="replace")[-3000:]
                )
            return http_status(ready_url) == 200

        wait_until(ready, START_TIMEOUT_S, f"{self.name} at {ready_url}")
        return self

    def workers(self) -> list[int]:
        """Return the PIDs of the direct children (gunicorn's workers)."""
        if self.process is None:
            return []

        pid = self.process.pid
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []

        return [int(item) for item in text.split()]

    def stop(self) -> None:
        """Stop the server by its PID, then its whole process group."""
        if self.process is None or self.process.poll() is not None:
            return

        try:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
        finally:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)


class MemorySampler:
    """Sample VmRSS of every worker of a server, and read VmHWM after."""

    def __init__(self, server: Server, interval: float = 0.02) -> None:
        self.server = server
        self.interval = interval
        self.peak_rss: dict[int, int] = {}
        self.hwm: dict[int, int] = {}
        self.before: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "MemorySampler":
        for pid in self.server.workers():
            self.before[pid] = _proc_status(pid).get("VmRSS", 0)
            try:
                # "5" resets the peak (VmHWM) to the current RSS.
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for pid in self.server.workers():
            status = _proc_status(pid)
            if "VmHWM" in status:
                self.hwm[pid] = status["VmHWM"]

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self.server.workers():
                rss = _proc_status(pid).get("VmRSS", 0)
                self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), rss)

    def peak_mib(self) -> dict[int, float]:
        """Return each worker's peak, the larger of sampled RSS and HWM."""
        pids = set(self.peak_rss) | set(self.hwm)
        return {
            pid: max(self.peak_rss.get(pid, 0), self.hwm.get(pid, 0)) / 1024
            for pid in sorted(pids)
        }

    def before_mib(self) -> list[float]:
        """Return each worker's RSS just before the transfer, in MiB."""
        return [value / 1024 for value in self.before.values()]


def _proc_status(pid: int) -> dict[str, int]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}

    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def curl(*args: str) -> dict:
    """Run curl quietly and return its write-out figures."""
    write_out = (
        '{"code": %{http_code}, "bytes": %{size_download}, '
        '"up": %{size_upload}, "time": %{time_total}}'
    )
    result = subprocess.run(
        ["curl", "-s", "-S", "-o", "/dev/null", "-H", "Expect:",
         "--max-time", str(TRANSFER_TIMEOUT_S), "-w", write_out, *args],
        capture_output=True,
        text=True,
        timeout=TRANSFER_TIMEOUT_S + 30,
    )
    if result.returncode != 0:
        raise SystemExit(f"bench: curl {args} failed: {result.stderr}")

    return json.loads(result.stdout)


def sha256_file(path: Path) -> str:
    """Return the sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


class Measure:
    """One pair of series, Orb and anchor, and how to judge them."""

    def __init__(self, name: str, unit: str, anchor: str, target: float,
                 higher_is_better: bool = True) -> None:
        self.name = name
        self.unit = unit
        self.anchor = anchor
        self.target = target
        self.higher = higher_is_better
        self.orb: list[float] = []
        self.base: list[float] = []
        self.note = ""

    def ratios(self) -> list[float]:
        return [
            (orb / base) if self.higher else (base / orb)
            for orb, base in zip(self.orb, self.base)
            if orb and base
        ]

    def row(self) -> list[str]:
        ratios = self.ratios()
        ratio = statistics.median(ratios) if ratios else 0.0
        verdict = "met" if ratio >= self.target else "MISSED"
        return [
            self.name,
            _spread(self.orb, self.unit),
            f"{self.anchor}: {_spread(self.base, self.unit)}",
            f"**{ratio:.2f}** ({_range(ratios)})" if ratios else "-",
            f">= {self.target:g}",
            verdict,
        ]


def _spread(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.0f} {unit} ({_range(values, 0)})"


def _range(values: list[float], digits: int = 2) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}"


class Bench:
    """Start the servers, run the selected measures, report."""

    def __init__(self, args, work: Path, servers: list[Server]) -> None:
        self.args = args
        self.work = work
        self.servers = servers
        self.size = args.size_mib * MIB
        self.measures: list[Measure] = []
        self.memory: dict[str, list[dict[int, float]]] = {}
        self.idle_rss: list[float] = []
        self.notes: list[str] = []
        self.orb: Server | None = None
        self.nginx: Server | None = None
        self.bare: Server | None = None

    def run(self) -> int:
        only = self.args.only
        self.prepare_files()
        self.start_orb()
        self.upload_fixtures()
        if only in ("all", "download", "upload", "split", "concurrent"):
            self.start_nginx()
        if only in ("all", "wrk"):
            self.start_bare()

        if only in ("all", "download", "memory"):
            self.bench_downloads(memory_only=only == "memory")
        if only in ("all", "split"):
            self.bench_split()
        if only in ("all", "upload", "memory"):
            self.bench_upload(memory_only=only == "memory")
        if only in ("all", "wrk"):
            self.bench_wrk()
        if only in ("all", "concurrent"):
            self.bench_concurrent()

        report = self.report()
        print(report)
        if self.args.append:
            with open(RESULTS, "a") as results:
                results.write(report + "\n")
            print(f"Appended to {RESULTS.relative_to(ROOT)}")
        return 0

    # Set-up

    def prepare_files(self) -> None:
        self.big = self.work / "big.bin"
        log(f"Writing {self.args.size_mib} MiB of random bytes")
        with open(self.big, "wb") as handle:
            for _ in range(self.args.size_mib):
                handle.write(os.urandom(MIB))
        self.big_sha = sha256_file(self.big)
        self.small = self.work / "one-mib.bin"
        self.small.write_bytes(os.urandom(MIB))

    def start_orb(self) -> None:
        admin = os.environ.get("ORB_TEST_PG_URL")
        if not admin:
            raise SystemExit("bench: run me through bench/run (PostgreSQL)")

        self.database_url = _create_database(admin)
        self.orb_port = free_port()
        self.storage = self.work / "orb-storage"
        env = self._orb_env(self.orb_port, "orb")
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{self.orb_port}", "wsgi:app"]
        self.orb = Server("orb", command, env, self.work / "orb.out")
        self.servers.append(self.orb)
        self.orb.start(f"http://127.0.0.1:{self.orb_port}/ready")
        self.orb_url = f"http://127.0.0.1:{self.orb_port}"
        log(f"Orb on {self.orb_url}, workers {self.orb.workers()}")

    def _orb_env(self, port: int, name: str) -> dict:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ORB_", "db_", "CLUSTER_", "SIGNALING_"))
            and key != "DATABASE_URL"
        }
        env.update(
            ORB_ENV_FILE="",
            ORB_API_PORT=str(port),
            DATABASE_URL=self.database_url,
            ORB_DATA_DIR=str(self.work / f"{name}-data"),
            ORB_STORAGE_DIR=str(self.work / f"{name}-storage"),
            ORB_LOG_DIR=str(self.work / f"{name}-logs"),
            ORB_NODE_HOST="127.0.0.1",
        )
        return env

    def start_bare(self) -> None:
        port = free_port()
        env = self._orb_env(port, "bare")
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                   "--bind", f"127.0.0.1:{port}", "--pythonpath", "bench",
                   "bareapp:app"]
        self.bare = Server("bare Flask", command, env, self.work / "bare.out")
        self.servers.append(self.bare)
        self.bare_url = f"http://127.0.0.1:{port}"
        self.bare.start(self.bare_url + "/record")

    def start_nginx(self) -> None:
        port = free_port()
        prefix = self.work / "nginx"
        (prefix / "put").mkdir(parents=True)
        (prefix / "logs").mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            user="user root root;" if os.geteuid() == 0 else "",
            prefix=prefix,
            port=port,
            storage=self.storage,
        ))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        command = [nginx, "-p", str(prefix), "-c", str(conf),
                   "-g", "daemon off;"]
        self.nginx = Server("nginx", command, dict(os.environ),
                            self.work / "nginx.out")
        self.servers.append(self.nginx)
        self.nginx_url = f"http://127.0.0.1:{port}"
        self.nginx.start(self.nginx_url + "/health")
        blob = f"/blobs/{self.big_sha[:2]}/{self.big_sha[2:4]}/{self.big_sha}"
        self.nginx_big = self.nginx_url + blob

    def upload_fixtures(self) -> None:
        log("Uploading the large file and 100 small records to Orb")
        answer = curl_json(
            "-T", str(self.big), "-X", "POST",
            "-H", "Content-Type: application/octet-stream",
            f"{self.orb_url}/api/v1/files?name=big.bin",
        )
        if answer.get("sha256") != self.big_sha:
            raise SystemExit(f"bench: upload answered {answer}")
        self.big_id = answer["id"]
        self.orb_big = f"{self.orb_url}/api/v1/files/{self.big_id}/content"

        connection = http.client.HTTPConnection("127.0.0.1", self.orb_port)
        for number in range(100):
            body = os.urandom(1024)
            connection.request(
                "POST", f"/api/v1/files?name=small-{number:03d}.bin", body,
                {"Content-Type": "application/octet-stream",
                 "X-Orb-Meta-Batch": "bench"},
            )
            response = connection.getresponse()
            record = json.loads(response.read())
            if response.status != 201:
                raise SystemExit(f"bench: small upload answered {record}")
        connection.close()
        self.small_id = record["id"]

    # Measures

    def pair(self, measure: Measure, orb, anchor) -> Measure:
        """Run `orb` and `anchor` alternately for every round."""
        log(f"{measure.name}: {self.args.rounds} round(s)")
        for number in range(self.args.rounds):
            measure.orb.append(orb())
            measure.base.append(anchor())
            log(f"  round {number + 1}: Orb {measure.orb[-1]:.1f} "
                f"{measure.anchor} {measure.base[-1]:.1f} {measure.unit}")
        self.measures.append(measure)
        return measure

    def bench_downloads(self, memory_only: bool = False) -> None:
        size = self.size

        def whole(url: str, sampled: bool = False):
            def measure() -> float:
                if sampled:
                    with MemorySampler(self.orb) as sampler:
                        figures = curl(url)
                    self.memory.setdefault("download", []).append(
                        sampler.peak_mib()
                    )
                    self.idle_rss += sampler.before_mib()
                else:
                    figures = curl(url)
                _expect(figures, 200, size)
                return size / MIB / figures["time"]
            return measure

        if memory_only:
            whole(self.orb_big, sampled=True)()
            return

        self.pair(
            Measure(f"GET whole {self.args.size_mib} MiB", "MiB/s", "nginx",
                    0.9),
            whole(self.orb_big, sampled=True),
            whole(self.nginx_big),
        )

        first = size // 4 + 1
        length = size // 2
        header = f"{first}-{first + length - 1}"

        def ranged(url: str):
            def measure() -> float:
                figures = curl("-r", header, url)
                _expect(figures, 206, length)
                return length / MIB / figures["time"]
            return measure

        self.pair(
            Measure(f"GET range {length // MIB} MiB", "MiB/s", "nginx", 0.8),
            ranged(self.orb_big),
            ranged(self.nginx_big),
        )

    def bench_split(self) -> None:
        target = self.work / "split"
        target.mkdir()

        def split(url: str):
            def measure() -> float:
                started = time.monotonic()
                subprocess.run(
                    ["aria2c", "-x4", "-s4", "-k1M", "-q",
                     "--allow-overwrite=true", "--auto-file-renaming=false",
                     "--file-allocation=none", "--max-tries=1",
                     f"--timeout={TRANSFER_TIMEOUT_S}",
                     "-d", str(target), "-o", "copy.bin", url],
                    check=True,
                    timeout=TRANSFER_TIMEOUT_S,
                )
                elapsed = time.monotonic() - started
                copy = target / "copy.bin"
                if sha256_file(copy) != self.big_sha:
                    raise SystemExit(f"bench: aria2c copy of {url} differs")
                copy.unlink()
                return self.size / MIB / elapsed
            return measure

        measure = self.pair(
            Measure("aria2c -x4 -s4 split GET", "MiB/s", "nginx", 0.8),
            split(self.orb_big),
            split(self.nginx_big),
        )
        measure.note = "sha256 of every copy checked"

    def bench_upload(self, memory_only: bool = False) -> None:
        def orb() -> float:
            os.sync()
            with MemorySampler(self.orb) as sampler:
                figures = curl(
                    "-T", str(self.big), "-X", "POST",
                    "-H", "Content-Type: application/octet-stream",
                    f"{self.orb_url}/api/v1/files?name=big-again.bin",
                )
            self.memory.setdefault("upload", []).append(sampler.peak_mib())
            self.idle_rss += sampler.before_mib()
            _expect(figures, 201, None)
            return self.size / MIB / figures["time"]

        def nginx() -> float:
            os.sync()
            figures = curl("-T", str(self.big),
                           f"{self.nginx_url}/put/big.bin")
            _expect(figures, (201, 204), None)
            return self.size / MIB / figures["time"]

        if memory_only:
            orb()
            return

        self.pair(
            Measure(f"upload {self.args.size_mib} MiB (Orb POST, nginx PUT)",
                    "MiB/s", "nginx", 0.6),
            orb,
            nginx,
        )

    def bench_wrk(self) -> None:
        record = f"{self.orb_url}/api/v1/files/{self.small_id}"
        page = f"{self.orb_url}/api/v1/files?limit=100"
        bare = f"{self.bare_url}/record"
        self.pair(
            Measure("record GET (wrk)", "req/s", "bare Flask", 0.7),
            lambda: self.wrk(record),
            lambda: self.wrk(bare),
        )
        self.pair(
            Measure("list page of 100 (wrk)", "req/s", "bare Flask", 0.4),
            lambda: self.wrk(page),
            lambda: self.wrk(bare),
        )

    def wrk(self, url: str) -> float:
        duration = self.args.duration
        result = subprocess.run(
            ["wrk", "-t2", "-c16", f"-d{duration}s", "--timeout", "10s", url],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
        text = result.stdout
        match = re.search(r"Requests/sec:\s+([\d.]+)", text)
        if result.returncode != 0 or match is None:
            raise SystemExit(f"bench: wrk failed:\n{text}\n{result.stderr}")

        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
        errors = re.search(r"Socket errors: (.*)", text)
        if bad or errors:
            self.notes.append(f"wrk {url}: {bad and bad.group(0)} "
                              f"{errors and errors.group(0)}")
        return float(match.group(1))

    def bench_concurrent(self) -> None:
        body = self.small.read_bytes()
        runs: dict[str, list[dict]] = {"orb": [], "nginx": []}

        def burst(kind: str):
            def measure() -> float:
                figures = self.burst(kind, body)
                runs[kind].append(figures)
                return figures["per_s"]
            return measure

        measure = self.pair(
            Measure("64 concurrent 1 MiB uploads", "uploads/s", "nginx",
                    0.0),
            burst("orb"),
            burst("nginx"),
        )
        orb_runs = runs["orb"]
        errors = sum(run["errors"] for run in orb_runs)
        measure.target = 0.0
        measure.errors = errors
        measure.note = (
            f"Orb errors {errors} of {64 * len(orb_runs)}, "
            f"p50 {_median_of(orb_runs, 'p50'):.0f} ms, "
            f"p99 {_median_of(orb_runs, 'p99'):.0f} ms; nginx errors "
            f"{sum(run['errors'] for run in runs['nginx'])}, "
            f"p50 {_median_of(runs['nginx'], 'p50'):.0f} ms, "
            f"p99 {_median_of(runs['nginx'], 'p99'):.0f} ms"
        )

    def burst(self, kind: str, body: bytes, count: int = 64) -> dict:
        port = self.orb_port if kind == "orb" else int(
            self.nginx_url.rsplit(":", 1)[1]
        )
        start = threading.Barrier(count)

        def one(number: int) -> float | None:
            if kind == "orb":
                method, path = "POST", f"/api/v1/files?name=c-{number}.bin"
                wanted = (201,)
            else:
                method, path = "PUT", f"/put/c-{number}.bin"
                wanted = (201, 204)
            connection = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=120
            )
            try:
                start.wait(60)
                began = time.monotonic()
                connection.request(method, path, body, {
                    "Content-Type": "application/octet-stream"
                })
                response = connection.getresponse()
                response.read()
                elapsed = time.monotonic() - began
                return elapsed if response.status in wanted else None
            except (OSError, http.client.HTTPException,
                    threading.BrokenBarrierError):
                return None
            finally:
                connection.close()

        began = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(count) as pool:
            results = list(pool.map(one, range(count)))
        wall = time.monotonic() - began
        times = sorted(result * 1000 for result in results if result)
        return {
            "errors": sum(result is None for result in results),
            "p50": _percentile(times, 50),
            "p99": _percentile(times, 99),
            "per_s": len(times) / wall,
        }

    # Report

    def report(self) -> str:
        stamp = datetime.datetime.now(datetime.timezone.utc)
        mode = "quick" if self.args.quick else "full"
        command = " ".join(["bench/run", *sys.argv[1:]])
        lines = [
            f"## {stamp:%Y-%m-%d %H:%M} UTC, {mode} run (`{command}`)",
            "",
            f"{os.cpu_count()} CPUs, {platform.platform()}, "
            f"{self.args.rounds} round(s) per pair, alternated; "
            f"large file {self.args.size_mib} MiB; Orb at commit "
            f"{_commit()}, gunicorn gthread, PostgreSQL.",
            "",
        ]
        if self.measures:
            lines += [
                "| measure | Orb, median (min-max) | anchor, median (min-max) "
                "| ratio Orb/anchor, median (min-max) | target | verdict |",
                "|---|---|---|---|---|---|",
            ]
            for measure in self.measures:
                row = measure.row()
                if hasattr(measure, "errors"):
                    row[3] = row[3] + " (throughput)"
                    row[4] = "0 errors"
                    row[5] = "met" if measure.errors == 0 else "MISSED"
                lines.append("| " + " | ".join(row) + " |")

        memory = self.memory_rows()
        if memory:
            lines += [""] + memory
        notes = [m.note for m in self.measures if m.note] + self.notes
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
        return "\n".join(lines) + "\n"

    def memory_rows(self) -> list[str]:
        rows = []
        for kind, runs in self.memory.items():
            peaks = [peak for run in runs for peak in run.values()]
            if not peaks:
                continue
            worst = max(peaks)
            per_run = "; ".join(
                ", ".join(f"{value:.0f}" for value in run.values())
                for run in runs
            )
            verdict = "met" if worst < 100 else "MISSED"
            rows.append(
                f"- Worker peak RSS during the {self.args.size_mib} MiB "
                f"{kind}: max {worst:.0f} MiB (every worker, per round: "
                f"{per_run} MiB); target < 100 MiB: {verdict}"
            )
        if rows and self.idle_rss:
            rows.append(
                f"- Worker RSS just before those transfers: "
                f"{min(self.idle_rss):.0f}-{max(self.idle_rss):.0f} MiB"
            )
        return rows


def _expect(figures: dict, status, size: int | None) -> None:
    wanted = status if isinstance(status, tuple) else (status,)
    if figures["code"] not in wanted or (
        size is not None and figures["bytes"] != size
    ):
        raise SystemExit(f"bench: unexpected answer {figures}")


def _percentile(values: list[float], percent: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, round(percent / 100 * (len(values) - 1)))
    return values[index]


def _median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs) if runs else 0.0


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT, capture_output=True, text=True,
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "orb_app", "gunicorn.conf.py"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout.strip()
    return result.stdout.strip() + (" (modified)" if dirty else "")


def curl_json(*args: str) -> dict:
    """Run curl and return its JSON answer."""
    result = subprocess.run(
        ["curl", "-s", "-S", "-H", "Expect:",
         "--max-time", str(TRANSFER_TIMEOUT_S), *args],
        capture_output=True,
        text=True,
        timeout=TRANSFER_TIMEOUT_S + 30,
    )
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise SystemExit(
            f"bench: curl {args} answered {result.stdout!r} {result.stderr}"
        ) from None


def _create_database(admin_url: str) -> str:
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    name = f"orb_bench_{uuid.uuid4().hex[:8]}"
    connection = psycopg2.connect(
        host=url.host, port=url.port, user=url.username, dbname=url.database
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


NGINX_CONF = """\
{user}
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 5;
    client_max_body_size 0;

    server {{
        listen 127.0.0.1:{port};

        location = /health {{
            return 200 "ok";
        }}

        location /blobs/ {{
            root {storage};
        }}

        location /put/ {{
            root {prefix};
            dav_methods PUT;
            create_full_put_path on;
        }}
    }}
}}
"""


if __name__ == "__main__":
    sys.exit(main())
