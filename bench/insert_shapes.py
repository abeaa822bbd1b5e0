"""How much each way of sending 1,000 event rows to PostgreSQL costs, client CPU and wall.

Not in run.py's list: run it by hand after ``make bench`` (it writes into the bench database
that bench/ingest.py left, with its own event ids):

    .venv/bin/python bench/insert_shapes.py

a. what ingestion did before: Django's client-side binding, one text array per column;
b. the same statement with binary arrays (``%b``), the shape ingestion uses now;
c. COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING.
"""

import json
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

BATCHES, ROWS = 15, 1000
TYPES = ["text", "text", "text", "timestamptz", "timestamptz", "text", "jsonb"]
HEAD = (
    "INSERT INTO metering_event (event_id, event_name, external_customer_id, timestamp, "
    "ingested_at, source, properties)"
)
TAIL = "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"


def rows(rng, tag: str, now: datetime) -> list[list]:
    return [
        [
            f"shape-{tag}-{i}",
            "tokens",
            f"cust-{rng.randrange(200)}",
            now - timedelta(seconds=rng.random() * 172800),
            now,
            "",
            json.dumps(
                {
                    "model": "OpenAI O1",
                    "prompt_type": rng.choice(["input", "output", "cached_input"]),
                    "tokens": str(rng.randint(1, 5000)),
                }
            ),
        ]
        for i in range(ROWS)
    ]


def client_text_arrays(conn, batch) -> int:
    cur = psycopg.ClientCursor(conn)
    arrays = ", ".join(f"%s::{t}[]" for t in TYPES)
    columns = [list(c) for c in zip(*batch, strict=True)]
    cur.execute(f"{HEAD} SELECT * FROM unnest({arrays}) {TAIL}", columns)
    return len(cur.fetchall())


def server_binary_arrays(conn, batch) -> int:
    cur = conn.cursor()
    arrays = ", ".join(f"%b::{t}[]" for t in TYPES)
    columns = [list(c) for c in zip(*batch, strict=True)]
    cur.execute(f"{HEAD} SELECT * FROM unnest({arrays}) {TAIL}", columns)
    return len(cur.fetchall())


def copy_then_insert(conn, batch) -> int:
    cur = conn.cursor()
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage_event (event_id text, event_name text, "
        "external_customer_id text, timestamp timestamptz, ingested_at timestamptz, "
        "source text, properties jsonb) ON COMMIT DELETE ROWS"
    )
    with cur.copy("COPY stage_event FROM STDIN") as copy:
        for row in batch:
            copy.write_row(row)
    cur.execute(f"{HEAD} SELECT * FROM stage_event {TAIL}")
    return len(cur.fetchall())


def main() -> dict:
    rng, now, tag = random.Random(3), datetime.now(UTC), f"{time.time_ns():x}"
    shapes = [
        ("a. client-side text arrays (today)", client_text_arrays),
        ("b. server-side binding, binary arrays", server_binary_arrays),
        ("c. COPY to temp table + INSERT SELECT", copy_then_insert),
    ]
    out, lines = {}, []
    for name, send in shapes:
        batches = [rows(rng, f"{tag}-{name[0]}-{b}", now) for b in range(BATCHES + 1)]
        with psycopg.connect(h.database_url()) as conn:
            send(conn, batches.pop())  # warm-up
            conn.commit()
            w, c, stored = time.perf_counter(), time.process_time(), 0
            for batch in batches:
                stored += send(conn, batch)
                conn.commit()
            wall = (time.perf_counter() - w) / BATCHES * 1000
            cpu = (time.process_time() - c) / BATCHES * 1000
        if stored != BATCHES * ROWS:
            raise RuntimeError(f"{name}: stored {stored} of {BATCHES * ROWS} rows")
        out[name] = {"wall_ms_per_1000": round(wall, 1), "client_cpu_ms_per_1000": round(cpu, 1)}
        lines.append((name, f"{wall:.1f}", f"{cpu:.1f}"))
    print(h.table(lines, ("1,000 rows, one commit", "wall ms", "client CPU ms")))
    h.write_json("insert_shapes", out)
    return out


if __name__ == "__main__":
    main()
