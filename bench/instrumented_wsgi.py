# ruff: noqa: I001
"""The app under a stopwatch, for profiling only: ``gunicorn bench.instrumented_wsgi``.

Wraps (in memory, at import; no app file is touched) the steps of ingestion and usage reads
and records, per request path, the wall and thread-CPU time of each step, and the wall time
of every SQL statement by kind. Each worker writes its totals to
bench/results/instrument-<pid>.json every couple of seconds; ``summarize()`` adds them up.

Steps nest: "ingest" includes "insert", "rollups" and "commit"; "sql:*" overlap the steps.
``python bench/profile_summary.py --instrument`` adds the workers' files up.
"""

import functools
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path

from config.wsgi import application as django_application  # first: it sets Django up

import config.api
import metering.api
import metering.auth
import metering.ingestion
import metering.rollups
import metering.selectors
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper

RESULTS = Path(__file__).resolve().parent / "results"
_local = threading.local()
_stats: dict = defaultdict(lambda: defaultdict(lambda: [0, 0.0, 0.0]))  # path -> step -> n,wall,cpu
_lock = threading.Lock()
_last_dump = [time.monotonic()]


def _record(step: str, wall: float, cpu: float) -> None:
    path = getattr(_local, "path", None)
    if path is None:
        return
    with _lock:
        entry = _stats[path][step]
        entry[0] += 1
        entry[1] += wall
        entry[2] += cpu


def _timed(step: str, func, *, skip_inside: str | None = None):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        if skip_inside and getattr(_local, skip_inside, False):
            return func(*args, **kwargs)
        setattr(_local, step, True)
        w, c = time.perf_counter(), time.thread_time()
        try:
            return func(*args, **kwargs)
        finally:
            _record(step, time.perf_counter() - w, time.thread_time() - c)
            setattr(_local, step, False)

    return wrapper


def _sql_kind(sql: str) -> str:
    head = sql.lstrip()[:120].upper()
    for table, name in (
        ("METERING_APIKEY", "apikey"),
        ("CATALOG_METER", "meter"),
        ("METERING_USAGEROLLUP", "rollup"),
        ("METERING_USAGEDISTINCT", "distinct"),
        ("METERING_EVENT", "event"),
        ("METERING_CUSTOMER", "customer"),
    ):
        if table in head.replace('"', ""):
            return f"sql:{head.split()[0].lower()} {name}"
    return f"sql:{head.split()[0].lower() if head else '?'}"


def _sql_timer(execute, sql, params, many, context):
    w = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        _record(_sql_kind(sql), time.perf_counter() - w, 0.0)


STEPS = [  # (owner, attribute, step, skip when inside step); missing ones are skipped
    (config.api.JSONParser, "parse", "parse json", None),
    (metering.auth.ApiKeyAuthentication, "authenticate", "auth", None),
    (metering.api, "meters_by_event_name", "meters", None),
    (metering.api, "_parse_all", "validate", None),
    (metering.api, "event_parse", "validate", "validate"),
    (metering.api, "events_ingest", "ingest (atomic)", None),
    (metering.ingestion, "_insert_new", "  insert events", None),
    (metering.rollups, "rollups_fold", "  rollups: fold", None),
    (BaseDatabaseWrapper, "commit", "  commit", None),
    (metering.selectors, "_edges", "usage: raw edge events", None),
    (metering.selectors, "_rollup_partials", "usage: rollups", None),
    (metering.api.UsageByMeterView, "post", "view", None),
    (metering.api.EventIngestView, "post", "view", None),
    (metering.api.EventBulkView, "post", "view", None),
]


def _patch():
    for owner, attribute, step, skip_inside in STEPS:
        func = getattr(owner, attribute, None)
        if func is None:
            print(f"instrumented_wsgi: no {owner.__name__}.{attribute}; not timed", flush=True)
            continue
        setattr(owner, attribute, _timed(step, func, skip_inside=skip_inside))


_patch()


def _dump(force=False):
    now = time.monotonic()
    if not force and now - _last_dump[0] < 2:
        return
    _last_dump[0] = now
    with _lock:
        data = {p: dict(s) for p, s in _stats.items()}
    RESULTS.mkdir(exist_ok=True)
    tmp = RESULTS / f".instrument-{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(RESULTS / f"instrument-{os.getpid()}.json")


def application(environ, start_response):
    _local.path = environ.get("PATH_INFO", "")
    w, c = time.perf_counter(), time.thread_time()
    try:
        with connection.execute_wrapper(_sql_timer):
            result = django_application(environ, start_response)
            body = b"".join(result)  # render inside the stopwatch
            if hasattr(result, "close"):
                result.close()
        return [body]
    finally:
        _record("request (wsgi)", time.perf_counter() - w, time.thread_time() - c)
        _local.path = None
        _dump()
