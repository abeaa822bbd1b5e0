"""Issue 13 figures: the "may I?" check (``GET /v1/customers/usage``) through gunicorn with
1M events in the customer's period: checks per second at a fixed concurrency, p50/p99, and
how soon after an event's 202 the check reflects it. The machine's load is printed with the
figures, since other work on the 2 cores moves them.

Run alone with ``bench/run.py entitlements``; ``make bench`` runs it with the other legs.
"""

import json
import os
import time

import harness as h
from ingest import machine_jiffies

from billing import expected_input, loaded_subscriber  # bench/billing.py, not the app

TARGETS = {"checks_per_s": 2000, "p99_ms": 10.0, "fresh_s": 2.0}
EVENTS = 1_000_000
CUSTOMER = "ent1m"
CONCURRENCY = 16
CHECKS = 30_000
FRESH_ROUNDS = 5


def entitle(url: str, limit: int) -> None:
    h.manage(
        url,
        "shell",
        "-c",
        "from catalog.models import Feature, Plan; "
        "from catalog.services import entitlement_create; "
        "f = Feature.objects.get(lookup_key='o1-input'); "
        f"entitlement_create(plan=Plan.objects.get(), feature=f, feature_type=f.type, "
        f"usage_limit={limit})",
    )


def check_request(port: int, key: str) -> bytes:
    return (
        f"GET /v1/customers/usage?customer_lookup_key={CUSTOMER}&feature_lookup_keys=o1-input "
        f"HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-api-key: {key}\r\n\r\n"
    ).encode()


def throughput(port: int, key: str) -> dict:
    request = check_request(port, key)
    h.run_concurrent(port, [request] * 2_000, CONCURRENCY)  # warm every worker thread
    busy0, all0 = machine_jiffies()
    load0 = os.getloadavg()[0]
    elapsed, statuses, sample, latencies = h.run_concurrent(port, [request] * CHECKS, CONCURRENCY)
    busy1, all1 = machine_jiffies()
    assert statuses == {200: CHECKS}, (statuses, sample)
    ms = [s * 1000 for s in latencies]
    return {
        "checks": CHECKS,
        "concurrency": CONCURRENCY,
        "checks_per_s": round(CHECKS / elapsed),
        "p50_ms": round(h.percentile(ms, 50), 2),
        "p99_ms": round(h.percentile(ms, 99), 2),
        "machine_busy": round((busy1 - busy0) / max(1, all1 - all0), 2),
        "loadavg_1m_before": round(load0, 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    }


def freshness(port: int, key: str, limit: int) -> dict:
    """Send one-token events until the limit; time each 202 until the check counts it."""
    client = h.Client(port)
    request = check_request(port, key)

    def feature() -> dict:
        status, body = client.request(request)
        assert status == 200, body[:300]
        return json.loads(body)["features"][0]

    seconds, usage = [], int(feature()["current_usage"])
    for n in range(FRESH_ROUNDS):
        event = json.dumps(
            {
                "event_id": f"fresh-{n}",
                "event_name": "tokens",
                "external_customer_id": CUSTOMER,
                "properties": {"model": "OpenAI O1", "prompt_type": "input", "tokens": "1"},
            }
        ).encode()
        status, body = client.request(h.post(port, "/v1/events", event, key))
        assert status == 202, body[:300]
        acked = time.perf_counter()
        usage += 1
        while int(feature()["current_usage"]) < usage:
            if time.perf_counter() - acked > 10:
                break
            time.sleep(0.01)
        seconds.append(time.perf_counter() - acked)
    last = feature()
    return {
        "events": FRESH_ROUNDS,
        "fresh_max_s": round(max(seconds), 3),
        "fresh_p50_s": round(h.percentile(seconds, 50), 3),
        "refused_at_limit": usage >= limit and last["allowed"] is False,
        "reason": last["reason"],
    }


def main() -> dict:
    url = h.database_url()
    start, end, load_seconds = loaded_subscriber(url, CUSTOMER, EVENTS)
    used = int(expected_input(url, CUSTOMER, start, end))
    limit = used + FRESH_ROUNDS  # the last fresh event reaches it
    entitle(url, limit)
    key = h.manage(url, "create_api_key", "bench-entitlements").strip().splitlines()[-1]
    figures: dict = {"events": EVENTS, "load_s": round(load_seconds, 1)}
    server = h.Gunicorn(
        url, workers=2, worker_class="gthread", threads=8, log=h.RESULTS / "gunicorn-ent.log"
    )
    with server:
        figures["server"] = server.label
        figures["check"] = throughput(server.port, key)
        figures["fresh"] = freshness(server.port, key, limit)
    check, fresh = figures["check"], figures["fresh"]
    rows = [
        (f"checks/s at concurrency {CONCURRENCY}", check["checks_per_s"], ">= 2000"),
        ("check p50 (ms)", check["p50_ms"], ""),
        ("check p99 (ms)", check["p99_ms"], "< 10"),
        ("event 202 -> check counts it, max (s)", fresh["fresh_max_s"], "< 2"),
        ("event 202 -> check counts it, p50 (s)", fresh["fresh_p50_s"], ""),
    ]
    print(h.table(rows, ("measure", "figure", "target")))
    print(
        f"{EVENTS:,} events in the period, {server.label}; refused at the limit: "
        f"{fresh['refused_at_limit']} ({fresh['reason']}); machine busy while timing "
        f"{check['machine_busy']:.0%} of 2 cores; load average (1 min) before "
        f"{check['loadavg_1m_before']}, after {check['loadavg_1m_after']}"
    )
    h.write_json("entitlements", figures)
    return figures


if __name__ == "__main__":
    main()
