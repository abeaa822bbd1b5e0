"""Ingestion and usage-read figures against gunicorn + PostgreSQL on this machine.

a. durable bulk ingest over HTTP (POST /v1/events/bulk, 1,000 events a batch), events/s
b. PostgreSQL's own COPY of the same rows (same batch size, commits and connections), rows/s
c. single-event ingest (POST /v1/events), requests/s
d. POST /v1/events/usage/meter over an anniversary window holding 1M events, latency

Knobs (environment):
  BENCH_DATABASE_URL, BENCH_RUNS, BENCH_ONLY (any of bulk,single,usage)
  BENCH_WORKERS, BENCH_WORKER_CLASS, BENCH_THREADS (gunicorn; default gthread 3x16)
  BENCH_BULK_BATCHES, BENCH_BULK_CONCURRENCY, BENCH_SINGLE_REQUESTS, BENCH_SINGLE_CONCURRENCY
  BENCH_USAGE_EVENTS, BENCH_USAGE_REQUESTS
  BENCH_CUSTOMERS, BENCH_SPREAD_HOURS (ingested events' timestamps span the last 48 h)
  BENCH_APP: the WSGI module gunicorn serves (default config.wsgi), for experiments
  BENCH_PROFILE_SECONDS: py-spy each phase's workers (BENCH_PROFILE_IDLE=1 samples waits too)
"""

import functools
import json
import os
import random
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path

import harness as h
import psycopg

BATCH = 1000
PROMPT_TYPES = ("input", "output", "cached_input")
USAGE_CUSTOMER = "cust-usage-1m"
COPY_SQL = (
    "COPY metering_event (event_id, event_name, external_customer_id, timestamp, ingested_at, "
    "source, properties) FROM STDIN"
)
TARGETS = {
    "bulk_events_per_s": 20_000,
    "http_copy_ratio": 0.40,
    "single_requests_per_s": 1_500,
    "usage_p99_ms": 100,
}


def knob(name: str, default):
    value = os.environ.get(f"BENCH_{name}")
    return type(default)(value) if value else default


def rfc3339(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def cpu_by_pid(pids) -> dict[int, float]:
    """utime + stime in seconds of each process (its threads included) still running."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            found[pid] = (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return found


def cpu_used(before: dict, after: dict) -> float:
    """CPU spent between two readings; a process started in between counts from zero, one
    that ended in between is lost (so this never overcounts)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def postgres_pids() -> list[int]:
    done = subprocess.run(["ps", "-C", "postgres", "-o", "pid="], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


class CpuSplit:
    """CPU seconds spent by the app (gunicorn and Celery workers), PostgreSQL and this client
    over a phase."""

    def __init__(self, server: h.Gunicorn | None, worker: h.CeleryWorker | None = None):
        self.server, self.worker = server, worker

    def __enter__(self):
        self.app_pids = self.server.worker_pids() if self.server else []
        self.worker_pids = [self.worker.proc.pid] if self.worker else []
        self.app_pids += self.worker_pids
        self.app0, self.db0 = cpu_by_pid(self.app_pids), cpu_by_pid(postgres_pids())
        self.client0 = time.process_time()
        self.machine0 = machine_jiffies()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t
        app = cpu_by_pid(self.app_pids)
        self.app = cpu_used(self.app0, app)
        self.folds = cpu_used(self.app0, {p: app[p] for p in self.worker_pids if p in app})
        self.db = cpu_used(self.db0, cpu_by_pid(postgres_pids()))
        self.client = time.process_time() - self.client0
        (busy0, all0), (busy1, all1) = self.machine0, machine_jiffies()
        self.machine_busy = (busy1 - busy0) / max(1, all1 - all0)

    def per(self, units: float, scale: float) -> dict:
        return {
            "wall_s": round(self.wall, 3),
            f"app_cpu_ms_per_{int(scale)}": round(self.app / units * scale * 1000, 2),
            f"of_which_celery_worker_ms_per_{int(scale)}": round(
                self.folds / units * scale * 1000, 2
            ),
            f"db_cpu_ms_per_{int(scale)}": round(self.db / units * scale * 1000, 2),
            f"client_cpu_ms_per_{int(scale)}": round(self.client / units * scale * 1000, 2),
            "accounted_cpu_of_2_cores": round(
                (self.app + self.db + self.client) / self.wall / 2, 2
            ),
            "machine_busy": round(self.machine_busy, 2),
            # CPU used on this machine by processes other than the bench's (e.g. a test run)
            "other_load_of_2_cores": round(
                max(0.0, self.machine_busy - (self.app + self.db + self.client) / self.wall / 2), 2
            ),
        }


class Profiler:
    """py-spy over every gunicorn worker for a phase, when BENCH_PROFILE_SECONDS is set."""

    def __init__(self, server: h.Gunicorn, name: str):
        self.server, self.name = server, name
        self.seconds = knob("PROFILE_SECONDS", 0)
        self.spy = shutil.which("py-spy", path=str(h.BIN)) or shutil.which("py-spy")
        self.procs = []

    def __enter__(self):
        if self.seconds and self.spy:
            for pid in self.server.worker_pids():
                out = h.RESULTS / f"profile-{self.name}-{pid}.txt"
                self.procs.append(
                    subprocess.Popen(
                        [
                            self.spy,
                            "record",
                            "--pid",
                            str(pid),
                            "--duration",
                            str(self.seconds),
                            "--rate",
                            "200",
                            "--format",
                            "raw",
                            "--nonblocking",
                            "--output",
                            str(out),
                            *(["--idle"] if knob("PROFILE_IDLE", 0) else []),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            try:
                proc.wait(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- data -------------------------------------------------------------------------------


def make_events(rng: random.Random, prefix: str, n: int, cfg: dict, now: datetime):
    """Event dicts with ids ``prefix-0..n-1`` for ``cfg["customers"]`` customers ``cust-<n>``,
    at times spread over the ``cfg["spread_hours"]`` before ``now``."""
    base, customers, hours = now.timestamp(), cfg["customers"], cfg["spread_hours"]
    events = []
    for i in range(n):
        moment = datetime.fromtimestamp(base - rng.random() * hours * 3600, UTC)
        events.append(
            {
                "event_id": f"{prefix}-{i}",
                "event_name": "tokens",
                "external_customer_id": f"cust-{rng.randrange(customers)}",
                "timestamp": rfc3339(moment),
                "properties": {
                    "model": "OpenAI O1",
                    "prompt_type": rng.choice(PROMPT_TYPES),
                    "tokens": str(rng.randint(1, 5000)),
                },
            }
        )
    return events


def compact(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def copy_payload(events: list[dict], id_prefix: str, ingested_at: str) -> bytes:
    """The same rows as COPY text (no tab, newline or backslash occurs in them)."""
    lines = [
        f"{id_prefix}{e['event_id']}\t{e['event_name']}\t{e['external_customer_id']}\t"
        f"{e['timestamp']}\t{ingested_at}\t\t{json.dumps(e['properties'])}\n"
        for e in events
    ]
    return "".join(lines).encode()


# --- phases -----------------------------------------------------------------------------


def setup(url: str) -> dict:
    h.database_recreate(url)
    h.manage(url, "migrate", "--noinput")
    h.manage(url, "seed_demo")
    api_key = h.manage(url, "create_api_key", "bench").strip().splitlines()[-1].strip()
    with psycopg.connect(url) as conn:
        meters = conn.execute(
            "SELECT id, filters FROM catalog_meter WHERE event_name = 'tokens'"
        ).fetchall()
    by_type = {}
    for meter_id, filters in meters:
        for item in filters:
            if item["key"] == "prompt_type":
                for value in item["values"]:
                    by_type[value] = meter_id
    if set(by_type) != set(PROMPT_TYPES):
        raise RuntimeError(f"seed_demo meters are not the expected o1 catalog: {meters}")
    return {"api_key": api_key, "meters": by_type}


def usage_window(now: datetime) -> tuple[datetime, datetime]:
    """An anniversary-style 30-day window, not hour-aligned, ending yesterday at 13:27:41."""
    end = (now - timedelta(days=1)).replace(hour=13, minute=27, second=41, microsecond=0)
    return end - timedelta(days=30), end


def usage_load(url: str, n: int, start: datetime, end: datetime) -> dict:
    """``n`` raw events for one customer spread over the window, then the app's own rebuild."""
    with h.stopwatch() as load, psycopg.connect(url) as conn:
        conn.execute("SELECT setseed(0.42)")
        conn.execute(
            """
            INSERT INTO metering_event (event_id, event_name, external_customer_id, timestamp,
                                        ingested_at, source, properties)
            SELECT 'usage-' || g, 'tokens', %(customer)s,
                   %(start)s + random() * (%(end)s::timestamptz - %(start)s), now(), '',
                   jsonb_build_object(
                       'model', 'OpenAI O1',
                       'prompt_type', (ARRAY['input', 'output', 'cached_input'])[1 + g %% 3],
                       'tokens', (1 + floor(random() * 5000))::int::text)
            FROM generate_series(1, %(n)s) AS g
            """,
            {"customer": USAGE_CUSTOMER, "start": start, "end": end, "n": n},
        )
    with h.stopwatch() as rebuild:
        h.manage(
            url,
            "shell",
            "-c",
            "from catalog.models import Meter; from metering.rollups import "
            "meter_rollups_rebuild; [meter_rollups_rebuild(meter=m) for m in Meter.objects.all()]",
        )
    quiesce(url)
    return {"load_s": round(load["seconds"], 1), "rollup_rebuild_s": round(rebuild["seconds"], 1)}


def checkpoint(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def quiesce(url: str) -> None:
    """Vacuum, analyze and checkpoint, so a phase does not pay for the previous one's writes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def expected_usage(url: str, meter_prompt_type: str, start: datetime, end: datetime) -> Decimal:
    with psycopg.connect(url) as conn:
        (value,) = conn.execute(
            "SELECT coalesce(sum((properties->>'tokens')::numeric), 0) FROM metering_event "
            "WHERE external_customer_id = %s AND event_name = 'tokens' "
            "AND properties->>'model' = 'OpenAI O1' AND properties->>'prompt_type' = %s "
            "AND timestamp >= %s AND timestamp < %s",
            (USAGE_CUSTOMER, meter_prompt_type, start, end),
        ).fetchone()
    return Decimal(value)


def check(statuses: dict, expected: int, sample, what: str) -> None:
    bad = {k: v for k, v in statuses.items() if k != expected}
    if bad:
        raise RuntimeError(f"{what}: unexpected statuses {bad}; e.g. {sample[:500]!r}")


def copy_run(url: str, payloads: list[bytes], concurrency: int):
    """COPY each payload in its own transaction over ``concurrency`` connections.

    Returns the seconds taken and the CPU split of the run.
    """
    conns = [psycopg.connect(url) for _ in range(concurrency)]
    next_index = count()
    barrier = threading.Barrier(concurrency + 1)
    errors = []

    def worker(conn):
        barrier.wait()
        try:
            while (i := next(next_index)) < len(payloads):
                with conn.cursor() as cur, cur.copy(COPY_SQL) as copy:
                    copy.write(payloads[i])
                conn.commit()
        except Exception as error:  # reported after the run
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in conns]
    for t in threads:
        t.start()
    with CpuSplit(None) as cpu:
        barrier.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join(timeout=300)
        elapsed = time.perf_counter() - t0
    for conn in conns:
        conn.close()
    if errors:
        raise RuntimeError(f"COPY failed: {errors[0]}")
    return elapsed, cpu


def folds_drain(url: str, timeout: float = 300) -> None:
    """Wait until the worker has folded every ingested event into the rollups."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute("SELECT EXISTS (SELECT FROM metering_unfoldedusage)").fetchone()[0]:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not fold every event within {timeout} s")
            time.sleep(0.05)


def bench_bulk(server, worker, ctx, cfg) -> dict:
    rng = random.Random(1)
    now = datetime.now(UTC)
    ingested = now.isoformat()
    runs, batches, conc = cfg["runs"], cfg["bulk_batches"], cfg["bulk_concurrency"]
    print(f"  bulk: building {runs} x {batches} batches of {BATCH} events ...", flush=True)
    http_bodies, copy_bodies = [], []
    for r in range(runs):
        reqs, copies = [], []
        for b in range(batches):
            events = make_events(rng, f"b{r}-{b}", BATCH, cfg, now)
            reqs.append(
                h.post(server.port, "/v1/events/bulk", compact({"events": events}), ctx["api_key"])
            )
            copies.append(copy_payload(events, "copy-", ingested))
        http_bodies.append(reqs)
        copy_bodies.append(copies)
    warm = [
        h.post(
            server.port,
            "/v1/events/bulk",
            compact({"events": make_events(rng, f"warm{w}", BATCH, cfg, now)}),
            ctx["api_key"],
        )
        for w in range(2 * conc)
    ]
    _, statuses, sample, _ = h.run_concurrent(server.port, warm, conc)
    check(statuses, 202, sample, "bulk warm-up")
    folds_drain(h.database_url())

    http_rates, folded_rates, copy_rates, ratios, batch_ms = [], [], [], [], []
    split = copy_split = None
    for r in range(runs):

        def http_leg(r=r):
            checkpoint(h.database_url())
            with CpuSplit(server, worker) as cpu, Profiler(server, "bulk"):
                t0 = time.perf_counter()
                elapsed, statuses, sample, lat = h.run_concurrent(server.port, http_bodies[r], conc)
                folds_drain(h.database_url())  # the worker folds alongside, on the same cores
                folded_s = time.perf_counter() - t0
            check(statuses, 202, sample, "bulk")
            return elapsed, folded_s, lat, cpu

        def copy_leg(r=r):
            checkpoint(h.database_url())
            return copy_run(h.database_url(), copy_bodies[r], conc)

        # Each leg starts from a checkpoint, and they take turns going first, so neither
        # always pays for the other's writes.
        if r % 2:
            (copy_s, copy_cpu), (elapsed, folded_s, lat, cpu) = copy_leg(), http_leg()
        else:
            (elapsed, folded_s, lat, cpu), (copy_s, copy_cpu) = http_leg(), copy_leg()
        http_rate = batches * BATCH / elapsed
        folded_rates.append(batches * BATCH / folded_s)
        copy_rate = batches * BATCH / copy_s
        http_rates.append(http_rate)
        copy_rates.append(copy_rate)
        ratios.append(http_rate / copy_rate)
        batch_ms += [x * 1000 for x in lat]
        if r == runs // 2:
            split = cpu.per(batches * BATCH, 1000)
            copy_split = copy_cpu.per(batches * BATCH, 1000)
        print(
            f"  bulk run {r + 1}/{runs}: HTTP {http_rate:,.0f} events/s "
            f"(all folded: {folded_rates[-1]:,.0f}/s), "
            f"COPY {copy_rate:,.0f} rows/s, ratio {http_rate / copy_rate:.0%}",
            flush=True,
        )
    return {
        "bulk_events_per_s": round(h.median(http_rates)),
        "copy_rows_per_s": round(h.median(copy_rates)),
        "http_copy_ratio": round(h.median(http_rates) / h.median(copy_rates), 3),
        "bulk_runs_events_per_s": [round(x) for x in http_rates],
        # Until the last event is also in the rollups (the worker folds during the run).
        "bulk_folded_events_per_s": round(h.median(folded_rates)),
        "copy_runs_rows_per_s": [round(x) for x in copy_rates],
        "bulk_batch_latency_ms": {
            "p50": round(h.percentile(batch_ms, 50), 1),
            "p99": round(h.percentile(batch_ms, 99), 1),
        },
        "bulk_cpu_split": split,
        "copy_cpu_split": copy_split,
        "bulk_concurrency": conc,
        "bulk_batches_per_run": batches,
    }


def bench_single(server, worker, ctx, cfg) -> dict:
    rng = random.Random(2)
    now = datetime.now(UTC)
    runs, n, conc = cfg["runs"], cfg["single_requests"], cfg["single_concurrency"]
    bodies = [
        [
            h.post(server.port, "/v1/events", compact(e), ctx["api_key"])
            for e in make_events(rng, f"s{r}", n, cfg, now)
        ]
        for r in range(runs + 1)
    ]
    _, statuses, sample, _ = h.run_concurrent(server.port, bodies[-1][: 20 * conc], conc)
    check(statuses, 202, sample, "single warm-up")
    rates, lat_ms, split = [], [], None
    for r in range(runs):
        with CpuSplit(server, worker) as cpu, Profiler(server, "single"):
            elapsed, statuses, sample, lat = h.run_concurrent(server.port, bodies[r], conc)
            folds_drain(h.database_url())
        check(statuses, 202, sample, "single")
        rates.append(n / elapsed)
        lat_ms += [x * 1000 for x in lat]
        if r == runs // 2:
            split = cpu.per(n, 1)
        print(f"  single run {r + 1}/{runs}: {n / elapsed:,.0f} requests/s", flush=True)
    return {
        "single_requests_per_s": round(h.median(rates)),
        "single_runs_requests_per_s": [round(x) for x in rates],
        "single_latency_ms": {
            "p50": round(h.percentile(lat_ms, 50), 2),
            "p99": round(h.percentile(lat_ms, 99), 2),
        },
        "single_cpu_split": split,
        "single_concurrency": conc,
        "single_requests_per_run": n,
    }


def bench_usage(server, ctx, cfg, window, loaded) -> dict:
    start, end = window
    body = compact(
        {
            "meter_id": ctx["meters"]["input"],
            "external_customer_id": USAGE_CUSTOMER,
            "start_time": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "end_time": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    raw = h.post(server.port, "/v1/events/usage/meter", body, ctx["api_key"])
    client = h.Client(server.port)
    try:
        status, answer = client.request(raw)
        if status != 200:
            raise RuntimeError(f"usage: {status} {answer[:500]!r}")
        got = Decimal(json.loads(answer)["value"])
        want = expected_usage(h.database_url(), "input", start, end)
        if got != want:
            raise RuntimeError(f"usage: the API says {got}, SQL over raw events says {want}")
        for _ in range(20):  # warm every worker's connection
            client.request(raw)
        runs, n = cfg["runs"], cfg["usage_requests"]
        p50s, p95s, p99s, every = [], [], [], []
        for r in range(runs):
            lat = []
            with Profiler(server, "usage"):
                for _ in range(n):
                    t0 = time.perf_counter()
                    status, answer = client.request(raw)
                    lat.append((time.perf_counter() - t0) * 1000)
                    if status != 200:
                        raise RuntimeError(f"usage: {status} {answer[:500]!r}")
            p50s.append(h.percentile(lat, 50))
            p95s.append(h.percentile(lat, 95))
            p99s.append(h.percentile(lat, 99))
            every += lat
            print(
                f"  usage run {r + 1}/{runs}: p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms",
                flush=True,
            )
    finally:
        client.close()
    return {
        "usage_p50_ms": round(h.median(p50s), 1),
        "usage_p95_ms": round(h.median(p95s), 1),
        "usage_p99_ms": round(h.median(p99s), 1),
        "usage_max_ms": round(max(every), 1),
        "usage_value_checked": str(got),
        "usage_events_in_window": cfg["usage_events"],
        "usage_window": [start.isoformat(), end.isoformat()],
        "usage_requests_per_run": n,
        "usage_load": loaded,
    }


# --- report -----------------------------------------------------------------------------


def report(figures: dict) -> str:
    def row(label, key, target, fmt, higher=True):
        if key not in figures:
            return None
        value = figures[key]
        met = value >= target if higher else value < target
        return (
            label,
            fmt(value),
            ("≥ " if higher else "< ") + fmt(target),
            "met" if met else "MISSED",
        )

    rows = [
        row(
            "bulk HTTP ingest (events/s)",
            "bulk_events_per_s",
            TARGETS["bulk_events_per_s"],
            "{:,.0f}".format,
        ),
        ("PostgreSQL COPY, same rows (rows/s)", f"{figures['copy_rows_per_s']:,.0f}", "", "")
        if "copy_rows_per_s" in figures
        else None,
        row("HTTP bulk / COPY", "http_copy_ratio", TARGETS["http_copy_ratio"], "{:.0%}".format),
        row(
            "single-event ingest (requests/s)",
            "single_requests_per_s",
            TARGETS["single_requests_per_s"],
            "{:,.0f}".format,
        ),
        ("usage/meter p50 (ms)", f"{figures['usage_p50_ms']:.1f}", "", "")
        if "usage_p50_ms" in figures
        else None,
        ("usage/meter p95 (ms)", f"{figures['usage_p95_ms']:.1f}", "", "")
        if "usage_p95_ms" in figures
        else None,
        row(
            "usage/meter p99 (ms), 1M events",
            "usage_p99_ms",
            TARGETS["usage_p99_ms"],
            "{:.1f}".format,
            higher=False,
        ),
    ]
    return h.table([r for r in rows if r], ("figure", "measured", "target", ""))


def git_revision() -> str:
    """HEAD, marked dirty when app files differ from it (others may be editing them)."""
    run = functools.partial(subprocess.run, cwd=h.ROOT, capture_output=True, text=True)
    head = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = run(["git", "status", "--porcelain", "--", ".", ":!bench"]).stdout.strip()
    return f"{head}{'+dirty' if dirty else ''}"


def main() -> dict:
    url = h.database_url()
    only = set(filter(None, os.environ.get("BENCH_ONLY", "bulk,single,usage").split(",")))
    cfg = {
        "runs": knob("RUNS", 5),
        # gunicorn.conf.py's defaults: few processes, many threads, so commits are shared
        "workers": knob("WORKERS", 3),
        "worker_class": knob("WORKER_CLASS", "gthread"),
        "threads": knob("THREADS", 16),
        "bulk_batches": knob("BULK_BATCHES", 150),
        "bulk_concurrency": knob("BULK_CONCURRENCY", 4),
        "single_requests": knob("SINGLE_REQUESTS", 6000),
        "single_concurrency": knob("SINGLE_CONCURRENCY", 48),
        "usage_events": knob("USAGE_EVENTS", 1_000_000),
        "usage_requests": knob("USAGE_REQUESTS", 200),
        "customers": knob("CUSTOMERS", 200),
        "spread_hours": knob("SPREAD_HOURS", 48.0),
    }
    print(
        f"ingest: fresh database {url.rsplit('/', 1)[-1]}, migrate, seed_demo, API key ...",
        flush=True,
    )
    ctx = setup(url)
    now = datetime.now(UTC)
    window = usage_window(now)
    loaded = None
    if "usage" in only:
        print(
            f"  usage: loading {cfg['usage_events']:,} events for one customer, rebuilding "
            "rollups ...",
            flush=True,
        )
        loaded = usage_load(url, cfg["usage_events"], *window)
        print(
            f"  usage: loaded in {loaded['load_s']} s, rollups rebuilt in "
            f"{loaded['rollup_rebuild_s']} s",
            flush=True,
        )
    server = h.Gunicorn(
        url,
        workers=cfg["workers"],
        worker_class=cfg["worker_class"],
        threads=cfg["threads"],
        log=h.RESULTS / "gunicorn-ingest.log",
        app=os.environ.get("BENCH_APP", "config.wsgi"),
        broker=h.BROKER,
    )
    figures = {"server": server.label, "app": server.app, "config": cfg, "targets": TARGETS}
    if server.app != "config.wsgi":
        figures["whatif"] = os.environ.get("BENCH_WHATIF", "")
        print(f"  NOTE: serving {server.app} {figures['whatif']}, not config.wsgi", flush=True)
    print(f"  gunicorn {server.label} on 127.0.0.1:{server.port}", flush=True)
    with h.CeleryWorker(url, h.RESULTS / "celery-ingest.log") as worker, server:
        if "bulk" in only:
            figures.update(bench_bulk(server, worker, ctx, cfg))
        if "single" in only:
            quiesce(url)
            figures.update(bench_single(server, worker, ctx, cfg))
        if "usage" in only:
            quiesce(url)
            figures.update(bench_usage(server, ctx, cfg, window, loaded))
    figures["measured_at"] = datetime.now(UTC).isoformat()
    figures["git"] = git_revision()
    path = h.write_json("ingest", figures)
    print()
    print(
        f"ingest ({server.label}; medians of {cfg['runs']} runs; 2 cores shared by client, "
        "gunicorn and PostgreSQL)"
    )
    print(report(figures))
    other = max(
        (figures.get(k) or {}).get("other_load_of_2_cores", 0)
        for k in ("bulk_cpu_split", "copy_cpu_split", "single_cpu_split")
    )
    if other > 0.15:
        print(
            f"WARNING: other processes used up to {other:.0%} of the 2 cores during the run; "
            "absolute rates are low by about that much (the HTTP/COPY ratio much less so)."
        )
    print(f"written to {path.relative_to(h.ROOT)}")
    return figures


if __name__ == "__main__":
    main()
