"""Issue 11 figures: the operator's admin pages with 10k customers and 1M events.

The admin overview (/admin/), the customer list, the subscription list and the event list,
each fetched ``REQUESTS`` times in a row by one signed-in staff user through gunicorn
(DEBUG off), in ``ROUNDS`` rounds; the figures are the median over rounds of each round's
p50 and p95. The first request of each page is also reported on its own (``cold_ms``).

The data is loaded in SQL: customers on the demo plan with last month's invoice finalized
(with its usage fence) and this month's draft, 1M events (a fifth last month, the rest this
month, stored in time order as ingestion stores them, skewed towards a few busy
customers) with their hourly rollups, some late events, a
few events of unknown customers and of a model no meter counts.

Run with ``python bench/run.py admin``; set BENCH_DATABASE_URL to use a database other than
tally_bench, and CACHE_URL to a Redis database the web processes share, as in production
(each round then starts with the overview uncached). Loopback only, bounded loops.
"""

import os
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta

import harness as h
import psycopg

CUSTOMERS = 10_000
EVENTS = 1_000_000
LATE_EVENTS = 300
REQUESTS = 30
ROUNDS = 3
PAGES = {
    "overview": "/admin/",
    "customers": "/admin/metering/customer/",
    "subscriptions": "/admin/billing/subscription/",
    "events": "/admin/metering/event/",
}
TARGET_P95_MS = 300.0
OVERVIEW_KEY = ":1:tally:admin:overview"  # billing.overview.OVERVIEW_KEY in Django's cache


def month_starts(now: datetime) -> tuple[datetime, datetime, datetime]:
    this = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last = (this - timedelta(days=1)).replace(day=1)
    following = (this + timedelta(days=32)).replace(day=1)
    return last, this, following


EVENT_INSERT = """
INSERT INTO metering_event (event_id, event_name, external_customer_id, timestamp, ingested_at,
                            source, properties)
SELECT %(prefix)s || g, 'tokens',
       CASE WHEN g %% 10000 = 0 THEN 'unknown-' || (g %% 7)
            ELSE 'bench-' || (1 + floor(%(customers)s * power(random(), 2)))::int END,
       stamp, CASE WHEN %(prefix)s = 'late-' THEN now() ELSE stamp + interval '1 second' END, '',
       jsonb_build_object(
           'model', CASE WHEN g %% 100 = 0 THEN 'GPT-4o' ELSE 'OpenAI O1' END,
           'prompt_type', (ARRAY['input', 'output', 'cached_input'])[1 + g %% 3],
           'tokens', (1 + g %% 997)::text)
FROM generate_series(1, %(n)s) AS g,
     LATERAL (SELECT %(start)s::timestamptz
                     + (g::float8 / %(n)s) * (%(end)s::timestamptz - %(start)s::timestamptz)
                     AS stamp) AS t
"""

ROLLUPS = """
INSERT INTO metering_usagerollup (meter_id, external_customer_id, bucket, event_count, value_sum,
                                  value_max, latest_at, latest_value, value_time_sum)
SELECT %(meter)s::varchar, external_customer_id, date_trunc('hour', timestamp), count(*),
       sum((properties->>'tokens')::numeric), max((properties->>'tokens')::numeric),
       max(timestamp), (array_agg((properties->>'tokens')::numeric
                                  ORDER BY timestamp DESC, id DESC))[1],
       sum((properties->>'tokens')::numeric * extract(epoch FROM timestamp))
FROM metering_event
WHERE event_name = 'tokens' AND properties->>'model' = 'OpenAI O1'
  AND properties->>'prompt_type' = %(prompt_type)s
  AND split_part(event_id, '-', 1) IN ('old', 'new', 'late')  -- the demo's are folded
GROUP BY external_customer_id, date_trunc('hour', timestamp)
"""


def load(url: str, now: datetime) -> dict:
    """Customers, subscriptions, invoices and events as the pages will find them."""
    last, this, following = month_starts(now)
    params = {"customers": CUSTOMERS, "last": last, "this": this, "next": following}
    with psycopg.connect(url) as conn:
        (plan,) = conn.execute("SELECT id FROM catalog_plan").fetchone()
        conn.execute(
            "INSERT INTO metering_customer (id, external_id, name, email, metadata, "
            "created_at, updated_at) SELECT 'cust_bench' || g, 'bench-' || g, 'Bench ' || g, "
            "'bench-' || g || '@example.com', '{}', now() - g * interval '1 second', now() "
            "FROM generate_series(1, %(customers)s) AS g",
            params,
        )
        conn.execute(
            "INSERT INTO billing_subscription (id, customer_id, plan_id, currency, "
            "billing_period, billing_period_count, billing_cycle, billing_anchor, start_date, "
            "status, current_period_start, current_period_end, cancel_at_period_end, metadata, "
            "created_at, updated_at) SELECT 'subs_bench' || g, 'cust_bench' || g, %(plan)s, "
            "'usd', 'MONTHLY', 1, 'calendar', %(last)s, %(last)s, 'active', %(this)s, %(next)s, "
            "false, '{}', now() - g * interval '1 second', now() "
            "FROM generate_series(1, %(customers)s) AS g",
            {**params, "plan": plan},
        )
        # Last month's events first: the closed invoices' fence is the highest id among them.
        conn.execute(
            EVENT_INSERT,
            {**params, "prefix": "old-", "start": last, "end": this, "n": EVENTS // 5},
        )
        (fence,) = conn.execute("SELECT max(id) FROM metering_event").fetchone()
        conn.execute(
            EVENT_INSERT,
            {
                **params,
                "prefix": "new-",  # up to five minutes ago
                "start": this,
                "end": now - timedelta(minutes=5),
                "n": EVENTS - EVENTS // 5 - LATE_EVENTS,
            },
        )
        conn.execute(  # stored after last month's invoices closed: late usage
            EVENT_INSERT,
            {**params, "prefix": "late-", "start": last, "end": this, "n": LATE_EVENTS},
        )
        meters = conn.execute(
            "SELECT m.id, f.lookup_key FROM catalog_meter m "
            "JOIN catalog_feature f ON f.id = m.feature_id"
        ).fetchall()
        kinds = {"o1-input": "input", "o1-output": "output", "o1-cached-input": "cached_input"}
        for meter, key in meters:
            conn.execute(ROLLUPS, {"meter": meter, "prompt_type": kinds[key]})
        # Two invoices a subscription, lines copied from the demo's draft, each invoice's
        # amounts scaled by a factor of 1 to 16 picked from its id.
        demo_lines = (
            "SELECT l.* FROM billing_invoicelineitem l JOIN billing_invoice i "
            "ON i.id = l.invoice_id JOIN metering_customer c ON c.id = i.customer_id "
            "WHERE c.external_id = 'acme' AND i.invoice_status = 'DRAFT'"
        )
        factor = "(1 + (hashtext({}) & 15))"
        for status, start, end in (("old", last, this), ("new", this, following)):
            conn.execute(
                "INSERT INTO billing_invoice (id, customer_id, subscription_id, invoice_status, "
                "payment_status, billing_reason, currency, subtotal, total, period_start, "
                "period_end, last_computed_at, created_at, updated_at) "
                "SELECT id, 'cust_bench' || g, 'subs_bench' || g, 'DRAFT', 'PENDING', "
                "'SUBSCRIPTION_CYCLE', 'usd', demo.total * " + factor.format("id") + ", "
                "demo.total * " + factor.format("id") + ", %(start)s, %(end)s, now(), now(), "
                "now() FROM generate_series(1, %(customers)s) AS g, "
                "LATERAL (SELECT 'inv_bench_' || %(status)s || g AS id) AS named, "
                f"(SELECT sum(amount) AS total FROM ({demo_lines}) l) AS demo",
                {**params, "status": status, "start": start, "end": end},
            )
        conn.execute(
            "INSERT INTO billing_invoicelineitem (invoice_id, price_id, meter_id, price_type, "
            "invoice_cadence, display_name, quantity, amount, currency, period_start, period_end, "
            "terms, meter_definition, unit_singular, unit_plural, packages, event_count) "
            "SELECT i.id, l.price_id, l.meter_id, l.price_type, l.invoice_cadence, "
            "l.display_name, l.quantity, l.amount * " + factor.format("i.id") + ", l.currency, "
            "i.period_start, i.period_end, l.terms, l.meter_definition, l.unit_singular, "
            f"l.unit_plural, l.packages, l.event_count FROM ({demo_lines}) l "
            "CROSS JOIN billing_invoice i WHERE i.id LIKE 'inv_bench_%%'"
        )
        conn.execute(
            "UPDATE billing_invoice SET invoice_status = 'FINALIZED', usage_fence = %(fence)s, "
            "finalized_at = %(this)s + interval '1 hour', "
            "invoice_number = 'INV-BENCH-' || substr(id, 14) WHERE id LIKE 'inv_bench_old%%'",
            {**params, "fence": fence},
        )
        conn.execute("UPDATE metering_meterrollupstate SET built_at = now()")
        (rollups,) = conn.execute("SELECT count(*) FROM metering_usagerollup").fetchone()
        (events,) = conn.execute("SELECT count(*) FROM metering_event").fetchone()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return {"customers": CUSTOMERS, "events": events, "rollups": rollups}


def sign_in(port: int, client: h.Client) -> str:
    """The session cookie of the bench's staff user, signed in through the admin's form."""
    status, page = client.request(h.get(port, "/admin/login/"))
    assert status == 200, status
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1).decode()
    cookie = re.search(rb"csrftoken=([^;]+)", client.last_headers).group(1).decode()
    form = f"csrfmiddlewaretoken={token}&username=bench&password=bench-password-1".encode()
    login = (
        f"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Cookie: csrftoken={cookie}\r\nReferer: http://127.0.0.1:{port}/admin/login/\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(form)}\r\n\r\n"
    ).encode() + form
    status, _ = client.request(login)
    assert status == 302, status
    return re.search(rb"sessionid=([^;]+)", client.last_headers).group(1).decode()


def page_times(port: int, client: h.Client, session: str, path: str) -> list[float]:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: sessionid={session}\r\n\r\n"
    ).encode()
    times = []
    for _ in range(REQUESTS):
        t = time.perf_counter()
        status, body = client.request(request)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status, body[:300])
    return times


def main() -> dict:
    url = h.database_url()
    figures: dict = {}
    if not os.environ.get("BENCH_ADMIN_REUSE"):  # set to time pages again on loaded data
        h.database_recreate(url)
        h.manage(url, "migrate", "--noinput")
        h.manage(url, "seed_demo")
        h.manage(
            url,
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            "User.objects.create_superuser('bench', 'bench@example.com', 'bench-password-1')",
        )
        with h.stopwatch() as loading:
            figures["data"] = load(url, datetime.now(UTC))
        figures["data"]["load_s"] = round(loading["seconds"], 1)
    h.manage(url, "collectstatic", "--noinput")  # DEBUG is off: pages need the manifest
    server = h.Gunicorn(
        url, workers=2, worker_class="gthread", threads=2, log=h.RESULTS / "gunicorn-admin.log"
    )
    rounds: dict[str, list[dict]] = {name: [] for name in PAGES}
    with server:
        client = h.Client(server.port)
        session = sign_in(server.port, client)
        for _ in range(ROUNDS):
            if cache := os.environ.get("CACHE_URL"):  # each round starts cold
                subprocess.run(["redis-cli", "-u", cache, "del", OVERVIEW_KEY], check=True)
            for name, path in PAGES.items():
                times = page_times(server.port, client, session, path)
                rounds[name].append(
                    {
                        "cold_ms": round(times[0], 1),
                        "p50_ms": round(h.percentile(times, 50), 1),
                        "p95_ms": round(h.percentile(times, 95), 1),
                    }
                )
    for name, runs in rounds.items():
        figures[name] = {
            key: h.median([run[key] for run in runs]) for key in ("cold_ms", "p50_ms", "p95_ms")
        }
        figures[name]["rounds"] = runs
    figures["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = [
        (f"{name} p50 / p95 (ms)", f"{f['p50_ms']} / {f['p95_ms']}", f"< {TARGET_P95_MS:.0f}")
        for name, f in ((n, figures[n]) for n in PAGES)
    ]
    print(h.table(rows, ("page, 10k customers, 1M events", "median of 3 rounds", "p95 target")))
    print(f"data: {figures.get('data', 'reused')}")
    print(f"load: {figures['uptime']}")
    h.write_json("admin", figures)
    return figures


if __name__ == "__main__":
    main()
