"""Issue 4 and 5 figures: draft freshness under sustained ingestion with a real Celery
worker on Redis, invoice preview latency with 1M and 10M events in the period, and the
portal home page with 1M events.

Run with ``make bench``. Loopback only, bounded loops.
"""

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import harness as h
import psycopg

TARGETS = {"freshness_p95_s": 2.0, "preview_p99_ms_10m": 100.0, "portal_home_p95_ms": 150.0}
RATE_PER_S, SECONDS = 20, 15
PREVIEWS = 100
HOMES = 100


def sql_one(url: str, query: str, params=()):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchone()


def draft_quantity(url: str, customer: str) -> Decimal:
    row = sql_one(
        url,
        "SELECT li.quantity FROM billing_invoicelineitem li "
        "JOIN billing_invoice i ON i.id = li.invoice_id "
        "JOIN metering_customer c ON c.id = i.customer_id "
        "WHERE c.external_id = %s AND i.invoice_status = 'DRAFT' AND li.display_name = %s",
        (customer, "Input Tokens"),
    )
    return Decimal(row[0]) if row else Decimal(-1)


def freshness(url: str, port: int, key: str) -> dict:
    """Send RATE_PER_S one-token events a second; time each until the draft counts it."""
    base = draft_quantity(url, "acme")
    sent: list[float] = []
    seen: list[tuple[float, Decimal]] = []
    done = threading.Event()

    def watch():
        with psycopg.connect(url, autocommit=True) as conn:
            while not done.is_set():
                row = conn.execute(
                    "SELECT li.quantity FROM billing_invoicelineitem li "
                    "JOIN billing_invoice i ON i.id = li.invoice_id "
                    "JOIN metering_customer c ON c.id = i.customer_id WHERE c.external_id = "
                    "'acme' AND i.invoice_status = 'DRAFT' AND li.display_name = 'Input Tokens'"
                ).fetchone()
                if row:
                    seen.append((time.perf_counter(), Decimal(row[0])))
                time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    client = h.Client(port)
    total = RATE_PER_S * SECONDS
    t0 = time.perf_counter()
    for i in range(total):
        time.sleep(max(0.0, t0 + i / RATE_PER_S - time.perf_counter()))
        stamp = datetime.now(UTC).isoformat()
        body = json.dumps(
            {
                "event_name": "tokens",
                "external_customer_id": "acme",
                "timestamp": stamp,
                "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": "1"},
            }
        )
        sent.append(time.perf_counter())
        status, _ = client.request(h.post(port, "/v1/events", body.encode(), key))
        assert status == 202, status
    deadline = time.perf_counter() + 30
    while time.perf_counter() < deadline and (not seen or seen[-1][1] < base + total):
        time.sleep(0.05)
    done.set()
    watcher.join()
    latencies = []
    for i, at in enumerate(sent):
        need = base + i + 1
        first = next((t for t, q in seen if q >= need and t >= at), None)
        latencies.append(first - at if first else float("inf"))
    return {
        "events": total,
        "rate_per_s": RATE_PER_S,
        "freshness_p50_s": round(h.percentile(latencies, 50), 3),
        "freshness_p95_s": round(h.percentile(latencies, 95), 3),
        "converged": seen[-1][1] == base + total if seen else False,
    }


def load_period(url: str, customer: str, n: int, start: datetime, end: datetime) -> None:
    """``n`` input-token events in the period, and their hourly rollups built in SQL."""
    with psycopg.connect(url) as conn:
        conn.execute(
            """
            INSERT INTO metering_event (event_id, event_name, external_customer_id, timestamp,
                                        ingested_at, source, properties)
            SELECT %(customer)s || '-' || g, 'tokens', %(customer)s,
                   %(start)s + (g %% 1000000) * (%(end)s::timestamptz - %(start)s) / 1000000,
                   now(), '',
                   jsonb_build_object('model', 'OpenAI O1', 'prompt_type', 'input',
                                      'tokens', (1 + g %% 7)::text)
            FROM generate_series(1, %(n)s) AS g
            """,
            {"customer": customer, "start": start, "end": end, "n": n},
        )
        (meter,) = conn.execute(
            "SELECT m.id FROM catalog_meter m JOIN catalog_feature f ON f.id = m.feature_id "
            "WHERE f.lookup_key = 'o1-input'"
        ).fetchone()
        # What ingestion would have written, built in one pass for the load.
        conn.execute(
            """
            INSERT INTO metering_usagerollup (meter_id, external_customer_id, bucket,
                event_count, value_sum, value_max, latest_at, latest_value, value_time_sum)
            SELECT %(meter)s::varchar, %(customer)s::varchar, date_trunc('hour', timestamp),
                   count(*),
                   sum((properties->>'tokens')::numeric), max((properties->>'tokens')::numeric),
                   max(timestamp), (array_agg((properties->>'tokens')::numeric
                                              ORDER BY timestamp DESC, id DESC))[1],
                   sum((properties->>'tokens')::numeric * extract(epoch FROM timestamp))
            FROM metering_event WHERE external_customer_id = %(customer)s::varchar
            GROUP BY date_trunc('hour', timestamp)
            """,
            {"meter": meter, "customer": customer},
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def loaded_subscriber(url: str, customer: str, events: int) -> tuple[datetime, datetime, float]:
    """A fresh bench database with the demo, ``customer`` subscribed 20 days ago and
    ``events`` input-token events in its period (rollups built and trusted): the period, and
    the seconds the load took."""
    h.database_recreate(url)
    h.manage(url, "migrate", "--noinput")
    h.manage(url, "seed_demo")
    _, start, end = subscribe(url, customer)
    t0 = time.perf_counter()
    load_period(url, customer, events, start, datetime.now(UTC) - timedelta(minutes=1))
    with psycopg.connect(url, autocommit=True) as conn:  # rollups are trusted
        conn.execute("UPDATE metering_meterrollupstate SET built_at = now()")
    return start, end, time.perf_counter() - t0


def expected_input(url: str, customer: str, start, end) -> Decimal:
    (value,) = sql_one(
        url,
        "SELECT coalesce(sum((properties->>'tokens')::numeric), 0) FROM metering_event "
        "WHERE external_customer_id = %s AND timestamp >= %s AND timestamp < %s",
        (customer, start, end),
    )
    return Decimal(value)


def subscribe(url: str, customer: str) -> tuple[str, datetime, datetime]:
    out = h.manage(
        url,
        "shell",
        "-c",
        "from datetime import timedelta; from django.utils import timezone; "
        "from billing.services import subscription_create; from catalog.models import Plan; "
        "from metering.services import customer_create, portal_user_create; "
        f"c = customer_create(external_id='{customer}', name='{customer}'); "
        f"portal_user_create(customer=c, email='{customer}@example.com', "
        "password='bench-password-1', check_password=False); "
        "s = subscription_create(customer=c, plan=Plan.objects.get(), "
        "start_date=timezone.now() - timedelta(days=20)); "
        "print(s.pk, s.current_period_start.isoformat(), s.current_period_end.isoformat())",
    )
    sub, start, end = out.split()[-3:]
    return sub, datetime.fromisoformat(start), datetime.fromisoformat(end)


def preview_latency(port: int, key: str, subscription: str) -> tuple[dict, str]:
    client = h.Client(port)
    request = h.post(
        port, "/v1/invoices/preview", f'{{"subscription_id": "{subscription}"}}'.encode(), key
    )
    times, body = [], b""
    for _ in range(PREVIEWS):
        t = time.perf_counter()
        status, body = client.request(request)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, body[:300]
    total = re.search(rb'"total":"([0-9.]+)"', body).group(1).decode()
    return {
        "p50_ms": round(h.percentile(times, 50), 1),
        "p95_ms": round(h.percentile(times, 95), 1),
        "p99_ms": round(h.percentile(times, 99), 1),
    }, total


def portal_latency(port: int, email: str) -> dict:
    client = h.Client(port)
    status, page = client.request(h.get(port, "/portal/login/"))
    assert status == 200, (status, client.last_headers)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    cookie = re.search(rb"csrftoken=([^;]+)", client.last_headers).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username={email}&password=bench-password-1".encode()
    login = (
        f"POST /portal/login/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: csrftoken={cookie}\r\n"
        f"Referer: http://127.0.0.1:{port}/portal/login/\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\n\r\n"
    ).encode() + form
    status, _ = client.request(login)
    assert status == 302, status
    session = re.search(rb"sessionid=([^;]+)", client.last_headers).group(1).decode()
    home = (
        f"GET /portal/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: sessionid={session}\r\n\r\n"
    ).encode()
    times = []
    for _ in range(HOMES):
        t = time.perf_counter()
        status, page = client.request(home)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200 and b"Proposed invoice" in page, status
    return {
        "p50_ms": round(h.percentile(times, 50), 1),
        "p95_ms": round(h.percentile(times, 95), 1),
    }


def main() -> dict:
    url = h.database_url()
    h.database_recreate(url)
    h.manage(url, "migrate", "--noinput")
    h.manage(url, "seed_demo")
    h.manage(url, "collectstatic", "--noinput")  # DEBUG is off: pages need the manifest
    key = h.manage(url, "create_api_key", "bench").strip().splitlines()[-1]
    figures: dict = {}
    server = h.Gunicorn(
        url,
        workers=3,
        worker_class="gthread",
        threads=2,
        log=h.RESULTS / "gunicorn-billing.log",
        broker=h.BROKER,  # the web processes queue recomputes for the worker
    )
    with h.CeleryWorker(url, h.RESULTS / "celery-billing.log"), server:
        figures["freshness"] = freshness(url, server.port, key)
        for label, n, customer in (("1M", 1_000_000, "big1m"), ("10M", 10_000_000, "big10m")):
            sub, start, end = subscribe(url, customer)
            with h.stopwatch() as load:
                load_period(url, customer, n, start, datetime.now(UTC) - timedelta(minutes=1))
            with psycopg.connect(url, autocommit=True) as conn:  # rollups are trusted
                conn.execute("UPDATE metering_meterrollupstate SET built_at = now()")
            latency, total = preview_latency(server.port, key, sub)
            input_tokens = expected_input(url, customer, start, end)
            packages = (input_tokens + 999_999) // 1_000_000  # whole packages, rounded up
            figures[f"preview_{label}"] = {
                **latency,
                "events": n,
                "load_s": round(load["seconds"], 1),
                "total": total,
                "exact": Decimal(total) == packages * 15,
            }
            if label == "1M":
                figures["portal_home_1M"] = portal_latency(server.port, f"{customer}@example.com")
    rows = [
        ("event → persisted draft p50 (s)", figures["freshness"]["freshness_p50_s"], ""),
        ("event → persisted draft p95 (s)", figures["freshness"]["freshness_p95_s"], "< 2"),
        ("preview p99, 1M events (ms)", figures["preview_1M"]["p99_ms"], ""),
        ("preview p99, 10M events (ms)", figures["preview_10M"]["p99_ms"], "< 100"),
        ("portal home p95, 1M events (ms)", figures["portal_home_1M"]["p95_ms"], "< 150"),
    ]
    print(h.table(rows, ("measure", "figure", "target")))
    exact = (figures["preview_1M"]["exact"], figures["preview_10M"]["exact"])
    print(f"previews exact: 1M {exact[0]}, 10M {exact[1]}")
    h.write_json("billing", figures)
    return figures


if __name__ == "__main__":
    main()
