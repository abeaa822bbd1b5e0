"""Shared plumbing for the benchmarks: a scratch database, manage.py, gunicorn, a cheap client.

Benchmarks are not tests: they print figures. Everything here talks to 127.0.0.1 only and
every loop is bounded.
"""

import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from itertools import count
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/tally_bench"


def database_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)


def _maintenance_url(url: str) -> tuple[str, str]:
    """The URL of the ``postgres`` database on the same server, and the bench db's name."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"BENCH_DATABASE_URL must name a database on this machine: {url}")
    return urlunsplit(parts._replace(path="/postgres")), name


def database_recreate(url: str) -> None:
    """Drop and create the bench database (never any other)."""
    maintenance, name = _maintenance_url(url)
    with psycopg.connect(maintenance, autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))


BROKER = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/9")


def server_env(url: str, broker: str = "") -> dict:
    """Production-like settings; with no ``broker`` Celery tasks run inline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env.update(
        DATABASE_URL=url,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="bench-only-secret-key-not-for-production-0123456789abcdef",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_LOG_LEVEL="WARNING",
        CELERY_BROKER_URL=broker,
        TALLY_API_RATE="off",  # the bench measures throughput, not the per-key limit
    )
    return env


def manage(url: str, *args: str) -> str:
    """Run ``manage.py`` against the bench database; its stdout."""
    done = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=server_env(url),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """``gunicorn config.wsgi`` on a free loopback port, stopped by its own pid."""

    def __init__(
        self,
        url: str,
        *,
        workers: int,
        worker_class: str,
        threads: int,
        log: Path,
        app: str = "config.wsgi",
        broker: str = "",
    ):
        self.url, self.app, self.broker = url, app, broker
        self.workers, self.worker_class, self.threads = workers, worker_class, threads
        self.port = free_port()
        self.log = log
        self.proc = None

    @property
    def label(self) -> str:
        if self.worker_class == "gthread":
            return f"gthread {self.workers}x{self.threads}"
        return f"{self.worker_class} x{self.workers}"

    def start(self, timeout: float = 30) -> None:
        args = [
            str(BIN / "gunicorn"),
            self.app,
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--worker-class",
            self.worker_class,
            "--threads",
            str(self.threads),
            "--timeout",
            "120",
            "--log-level",
            "warning",
        ]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=ROOT,
                env=server_env(self.url, self.broker),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log}")
            try:
                status, _ = Client(self.port).request(get(self.port, "/v1/bench-ready"))
                if status == 404:  # Django answered: the app is loaded.
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {timeout}s; see {self.log}")

    def worker_pids(self) -> list[int]:
        done = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True
        )
        return [int(p) for p in done.stdout.split()]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group gunicorn's own session leads
            self.proc.wait(timeout=5)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class CeleryWorker:
    """``celery -A config worker`` (one process, solo pool) on ``BROKER``, emptied first."""

    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log
        self.proc = None

    def __enter__(self):
        subprocess.run(["redis-cli", "-u", BROKER, "flushdb"], capture_output=True, check=False)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [PYTHON, "-m", "celery", "-A", "config", "worker", "--pool", "solo"]
                + ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"],
                cwd=ROOT,
                env=server_env(self.url, BROKER),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        time.sleep(3)  # let it connect
        if self.proc.poll() is not None:
            raise RuntimeError(f"the celery worker exited; see {self.log}")
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def post(port: int, path: str, body: bytes, api_key: str) -> bytes:
    """A whole HTTP/1.1 request, built once so the timed loop only writes bytes."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def get(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


class Client:
    """A minimal HTTP/1.1 client over one socket: keep-alive when the server allows it.

    Far cheaper than http.client, so the client takes little of the two cores.
    """

    def __init__(self, port: int):
        self.port = port
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(raw)
            status, body, keep = self._read()
        except (TimeoutError, ConnectionError):
            self.close()  # a kept-alive socket the server closed: retry once on a new one
            self._connect()
            self.sock.sendall(raw)
            status, body, keep = self._read()
        if not keep:
            self.close()
        return status, body

    def _read(self) -> tuple[int, bytes, bool]:
        buf = self.buf
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the response head")
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        self.last_headers = head
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, keep = None, lines[0].startswith(b"HTTP/1.1")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                keep = value.strip().lower() == b"keep-alive"
        if length is None:  # no length: the body runs to the close
            while chunk := self.sock.recv(65536):
                buf += chunk
            self.buf = b""
            return status, buf, False
        while len(buf) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside the response body")
            buf += chunk
        self.buf = buf[length:]
        return status, buf[:length], keep


def run_concurrent(port: int, requests: list[bytes], concurrency: int, timeout: float = 300):
    """Send every request once over ``concurrency`` connections.

    Returns (elapsed seconds, {status: n}, first unexpected body, latencies in seconds).
    """
    next_index = count()
    start = threading.Barrier(concurrency + 1)
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    sample: list[bytes] = []
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def worker():
        client, mine, lat = Client(port), {}, []
        start.wait()
        try:
            while time.monotonic() < deadline:
                i = next(next_index)
                if i >= len(requests):
                    break
                t0 = time.perf_counter()
                status, body = client.request(requests[i])
                lat.append(time.perf_counter() - t0)
                mine[status] = mine.get(status, 0) + 1
                if status >= 300 and not sample:
                    sample.append(body)
        finally:
            client.close()
            with lock:
                for k, v in mine.items():
                    statuses[k] = statuses.get(k, 0) + v
                latencies.extend(lat)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return elapsed, statuses, (sample[0] if sample else None), latencies


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values):
    return statistics.median(values)


@contextmanager
def stopwatch():
    box = {}
    t0 = time.perf_counter()
    yield box
    box["seconds"] = time.perf_counter() - t0


def write_json(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def table(rows: list[tuple], headers: tuple) -> str:
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
