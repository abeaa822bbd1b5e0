"""Hourly rollups per meter and customer, folded in by a worker after ingest commits.

Ingest stores each new event, and in the same transaction one UnfoldedUsage row for each
meter it feeds: the value it already parsed. It never waits on rollup rows. ``rollups_fold``
moves a chunk of those rows into UsageRollup and UsageDistinct in one statement (one
transaction on SQLite). Usage reads add the unfolded rows, so they are exact however far
folding lags, and check FoldState.version so that they never straddle a fold.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.models import Meter
from config.coalesce import Coalescer
from metering.aggregation import NUMERIC_TEXT, Partial, matches, meter_value
from metering.matching import property_text_sql
from metering.models import (
    Event,
    FoldState,
    MeterRollupState,
    UnfoldedUsage,
    UsageDistinct,
    UsageRollup,
)

FOLD_CHUNK = 50_000
FOLD_ROUNDS = 20  # chunks per task run; the next run or beat takes the rest
FOLD_DELAY_SECONDS = 2.0


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Selection:
    """Which raw events of a meter's event name to aggregate."""

    customer: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    after_id: int | None = None  # only events stored after this one: late usage


def raw_partials(meter, selection: Selection, key: Callable) -> dict:
    """Partials of the selected events that feed ``meter``, grouped by
    ``key(customer, timestamp)``; read and matched in Python, in (timestamp, id) order."""
    events = Event.objects.filter(event_name=meter.event_name)
    if selection.customer is not None:
        events = events.filter(external_customer_id=selection.customer)
    if selection.start is not None:
        events = events.filter(timestamp__gte=selection.start)
    if selection.end is not None:
        events = events.filter(timestamp__lt=selection.end)
    if selection.after_id is not None:
        events = events.filter(id__gt=selection.after_id)
    partials: dict = defaultdict(Partial)
    for customer, timestamp, properties in events.order_by("timestamp", "id").values_list(
        "external_customer_id", "timestamp", "properties"
    ):
        if not matches(meter, meter.event_name, properties):
            continue
        try:
            value = meter_value(meter, properties)
        except ValueError:
            continue  # stored before this meter existed and cannot feed it
        partials[key(customer, timestamp)].add(timestamp, value)
    return partials


def _partials_query(meter, selection: Selection) -> tuple[str, list]:
    """SQL for ``raw_partials`` by (customer, hour) inside PostgreSQL, with the same rules:
    every filter key's text among its values (``matching``), only numeric text for numeric
    meters, and a text of at most 255 characters for COUNT_UNIQUE.
    Its columns are those of a rollup row, then the distinct values."""
    where, params = ["event_name = %s"], [meter.event_name]
    for column, op, value in (
        ("external_customer_id", "=", selection.customer),
        ("timestamp", ">=", selection.start),
        ("timestamp", "<", selection.end),
        ("id", ">", selection.after_id),
    ):
        if value is not None:
            where.append(f"{column} {op} %s")
            params.append(value)
    for item in meter.filters:
        text, text_params = property_text_sql("properties", item["key"])
        where.append(f"{text} = ANY(%s)")
        params += [*text_params, list(item["values"])]
    value, unique, select_params, fed_where = "NULL::numeric", "NULL::text", [], "TRUE"
    if meter.aggregation == "COUNT_UNIQUE":
        unique, select_params = property_text_sql("properties", meter.field)
        fed_where = "u IS NOT NULL AND char_length(u) <= 255"
    elif meter.aggregation != "COUNT":
        value = "(properties ->> %s)::numeric"
        select_params.append(meter.field)
        where.append("properties ->> %s ~ %s")
        params += [meter.field, NUMERIC_TEXT]
    sql = (
        "SELECT %s AS meter_id, external_customer_id, date_trunc('hour', timestamp) AS bucket, "
        "count(*) AS event_count, coalesce(sum(v), 0) AS value_sum, max(v) AS value_max, "
        "max(timestamp) FILTER (WHERE v IS NOT NULL) AS latest_at, "
        "(array_agg(v ORDER BY timestamp DESC, id DESC))[1] AS latest_value, "
        "coalesce(sum(v * extract(epoch FROM timestamp)), 0) AS value_time_sum, "
        "array_remove(array_agg(DISTINCT u), NULL) AS distinct_values "
        f"FROM (SELECT id, external_customer_id, timestamp, {value} AS v, {unique} AS u "
        f"FROM {Event._meta.db_table} WHERE {' AND '.join(where)}) AS fed "
        f"WHERE {fed_where} GROUP BY 1, 2, 3"
    )
    return sql, [meter.pk, *select_params, *params]


def _sql_partials(meter, selection: Selection) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(*_partials_query(meter, selection))
        rows = cursor.fetchall()
    partials = {}
    for _, customer, bucket, count, total, maximum, latest_at, latest_value, vt, distinct in rows:
        partials[customer, bucket] = Partial(
            count=count,
            total=total,
            maximum=maximum,
            latest_at=latest_at,
            latest_value=latest_value,
            value_time_total=vt,
            distinct=set(distinct),
        )
    return partials


def hourly_partials(meter, selection: Selection) -> dict[tuple[str, datetime], Partial]:
    """Partials of the selected events that feed ``meter``, by (customer, hour)."""
    if connection.vendor == "postgresql":
        return _sql_partials(meter, selection)
    return raw_partials(meter, selection, lambda customer, moment: (customer, hour_of(moment)))


# --- writing ----------------------------------------------------------------------------


_TABLE = UsageRollup._meta.db_table
ROLLUP_INSERT = (
    f"INSERT INTO {_TABLE} (meter_id, external_customer_id, bucket, event_count, value_sum, "
    "value_max, latest_at, latest_value, value_time_sum)"
)
_NEWER = f"{_TABLE}.latest_at IS NULL OR excluded.latest_at >= {_TABLE}.latest_at"
ROLLUP_MERGE = (
    "ON CONFLICT (meter_id, external_customer_id, bucket) DO UPDATE SET "
    f"event_count = {_TABLE}.event_count + excluded.event_count, "
    f"value_sum = {_TABLE}.value_sum + excluded.value_sum, "
    f"value_max = CASE WHEN {_TABLE}.value_max IS NULL OR excluded.value_max > "
    f"{_TABLE}.value_max THEN excluded.value_max ELSE {_TABLE}.value_max END, "
    f"latest_value = CASE WHEN excluded.latest_at IS NOT NULL AND ({_NEWER}) "
    f"THEN excluded.latest_value ELSE {_TABLE}.latest_value END, "
    f"latest_at = CASE WHEN excluded.latest_at IS NOT NULL AND ({_NEWER}) "
    f"THEN excluded.latest_at ELSE {_TABLE}.latest_at END, "
    f"value_time_sum = {_TABLE}.value_time_sum + excluded.value_time_sum"
)
DISTINCT_INSERT = (
    f"INSERT INTO {UsageDistinct._meta.db_table} (meter_id, external_customer_id, bucket, value)"
)
DISTINCT_MERGE = "ON CONFLICT (meter_id, external_customer_id, bucket, value) DO NOTHING"


def rollups_write(meter_id, partials: dict[tuple[str, datetime], Partial]) -> None:
    """Add partials keyed by (customer, hour) into one meter's rollups."""
    from metering.ingestion import insert_rows

    if not partials:
        return
    rows, distinct = [], []
    for (customer, bucket), p in sorted(partials.items(), key=lambda item: item[0]):
        rows.append(
            [
                meter_id,
                customer,
                bucket,
                p.count,
                p.total,
                p.maximum,
                p.latest_at,
                p.latest_value,
                p.value_time_total,
            ]
        )
        distinct += [[meter_id, customer, bucket, v] for v in sorted(p.distinct)]
    for first in range(0, len(rows), 2000):  # SQLite caps a statement's parameters
        insert_rows(
            head=ROLLUP_INSERT,
            types=[
                "text",
                "text",
                "timestamptz",
                "bigint",
                "numeric",
                "numeric",
                "timestamptz",
                "numeric",
                "numeric",
            ],
            rows=rows[first : first + 2000],
            tail=ROLLUP_MERGE,
        )
    for first in range(0, len(distinct), 5000):
        insert_rows(
            head=DISTINCT_INSERT,
            types=["text", "text", "timestamptz", "text"],
            rows=distinct[first : first + 5000],
            tail=DISTINCT_MERGE,
        )


def _merge_sql(fed: str) -> str:
    """One statement that merges ``fed`` (rows shaped like ``_partials_query``'s, after
    any CTEs it needs) into the rollups, and answers how many events it held."""
    columns = (
        "meter_id, external_customer_id, bucket, event_count, value_sum, value_max, "
        "latest_at, latest_value, value_time_sum"
    )
    return (
        f"{fed}, rolled AS ({ROLLUP_INSERT} SELECT {columns} FROM fed "
        f"WHERE meter_id IN (SELECT id FROM {Meter._meta.db_table}) {ROLLUP_MERGE}), "
        f"uniques AS ({DISTINCT_INSERT} SELECT meter_id, external_customer_id, bucket, "
        f"unnest(distinct_values) FROM fed WHERE meter_id IN (SELECT id FROM "
        f"{Meter._meta.db_table}) {DISTINCT_MERGE}) "
        "SELECT coalesce(sum(event_count), 0) FROM fed"
    )


_UNFOLDED = UnfoldedUsage._meta.db_table
# A chunk of unfolded rows, taken and aggregated in the same statement (one snapshot).
_FOLD_SQL = _merge_sql(
    f"WITH taken AS (DELETE FROM {_UNFOLDED} WHERE id IN "
    f"(SELECT id FROM {_UNFOLDED} ORDER BY id LIMIT %s) RETURNING *), "
    "fed AS MATERIALIZED (SELECT meter_id, external_customer_id, "
    "date_trunc('hour', timestamp) AS bucket, count(*) AS event_count, "
    "coalesce(sum(value), 0) AS value_sum, max(value) AS value_max, "
    "max(timestamp) FILTER (WHERE value IS NOT NULL) AS latest_at, "
    "(array_agg(value ORDER BY timestamp DESC, event_id DESC))[1] AS latest_value, "
    "coalesce(sum(value * extract(epoch FROM timestamp)), 0) AS value_time_sum, "
    "array_remove(array_agg(DISTINCT unique_value), NULL) AS distinct_values "
    "FROM taken GROUP BY 1, 2, 3)"
)


def unfolded_partials(key: Callable, **filters) -> dict:
    """Partials of the unfolded rows that match ``filters``, by ``key(row)``."""
    partials: dict = defaultdict(Partial)
    rows = UnfoldedUsage.objects.filter(**filters).order_by("timestamp", "event_id")
    for row in rows.only("meter_id", "external_customer_id", "timestamp", "value", "unique_value"):
        partials[key(row)].add(row.timestamp, row.fed)
    return partials


def fold_lock() -> None:
    """Serialise folds and rebuilds; on SQLite this write takes the database's write lock."""
    FoldState.objects.get_or_create(pk=1)
    FoldState.objects.select_for_update().filter(pk=1).update(version=F("version"))


def _version_bump() -> None:
    """Readers that saw the version before this commit retry: the rollups moved."""
    FoldState.objects.filter(pk=1).update(version=F("version") + 1)


def fold_version() -> int:
    return FoldState.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def _fold_chunk(limit: int) -> int:
    """Move the oldest unfolded rows, up to ``limit``, into the rollups; how many moved."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")  # compiling costs more than it saves here
            cursor.execute(_FOLD_SQL, [limit])
            (moved,) = cursor.fetchone()
        return int(moved) if moved else 0
    ids = list(UnfoldedUsage.objects.order_by("id").values_list("id", flat=True)[:limit])
    if not ids:
        return 0
    taken = unfolded_partials(
        lambda row: (row.meter_id, row.external_customer_id, hour_of(row.timestamp)),
        id__lte=ids[-1],  # nothing else can commit: fold_lock holds SQLite's write lock
    )
    UnfoldedUsage.objects.filter(id__lte=ids[-1]).delete()
    by_meter: dict = defaultdict(dict)
    for (meter_id, customer, bucket), partial in taken.items():
        by_meter[meter_id][customer, bucket] = partial
    for meter_id in Meter.objects.filter(pk__in=by_meter).values_list("pk", flat=True):
        rollups_write(meter_id, by_meter[meter_id])
    return len(ids)


def rollups_fold(*, limit: int = FOLD_CHUNK, rounds: int = FOLD_ROUNDS) -> int:
    """Fold unfolded usage into the rollups, oldest first, a chunk per transaction.
    Returns how many (event, meter) rows were folded."""
    folded = 0
    for _ in range(rounds):
        with transaction.atomic():
            fold_lock()
            moved = _fold_chunk(limit)
            if moved:
                _version_bump()
        folded += moved
        if moved < limit:
            break
    return folded


def _queue_fold(key: str) -> None:
    from metering.tasks import rollups_fold_task

    rollups_fold_task.apply_async(countdown=FOLD_DELAY_SECONDS)


fold_requests = Coalescer("fold", countdown=FOLD_DELAY_SECONDS, queue=_queue_fold)


def rollups_fold_request() -> None:
    """Ask for a fold that reads every row committed before this call."""
    fold_requests.request("fold")


def rollups_fold_all() -> int:
    """The fold task's body: fold what there is, and ask again if a run's rounds ran out."""
    with fold_requests.running("fold"):
        folded = rollups_fold()
        if folded >= FOLD_CHUNK * FOLD_ROUNDS:
            rollups_fold_request()
    return folded


@transaction.atomic
def meter_rollups_rebuild(*, meter: Meter) -> int:
    """Recompute one meter's rollups from every event, after the meter is created or
    changed, dropping its unfolded rows (made under the old definition) in the same
    snapshot. Returns how many events feed it."""
    fold_lock()
    MeterRollupState.objects.update_or_create(meter=meter, defaults={"built_at": timezone.now()})
    UsageRollup.objects.filter(meter=meter).delete()
    UsageDistinct.objects.filter(meter=meter).delete()
    if connection.vendor == "postgresql":
        query, params = _partials_query(meter, Selection())
        with connection.cursor() as cursor:
            cursor.execute(
                _merge_sql(
                    f"WITH dropped AS (DELETE FROM {_UNFOLDED} WHERE meter_id = %s), "
                    f"fed AS MATERIALIZED ({query})"
                ),
                [meter.pk, *params],
            )
            (count,) = cursor.fetchone()
    else:
        UnfoldedUsage.objects.filter(meter=meter).delete()
        partials = hourly_partials(meter, Selection())
        rollups_write(meter.pk, partials)
        count = sum(p.count for p in partials.values())
    _version_bump()
    return int(count)


# A meter changed this recently may still have requests in flight that parsed events with
# its old definition (web processes recheck meters every second); its rebuild waits, so that
# their unfolded rows come before the rebuild drops them. Until then usage reads raw events.
SETTLE_SECONDS = 10


def stale_meters(*, settle_seconds: float = SETTLE_SECONDS):
    """Meters changed since their rollups were last built, or never built, and not changed
    in the last ``settle_seconds``."""
    changed = Meter.objects.filter(
        Q(rollup_state__isnull=True) | Q(rollup_state__built_at__lt=F("updated_at"))
    )
    return changed.filter(updated_at__lte=timezone.now() - timedelta(seconds=settle_seconds))


def rollups_ready(meter) -> bool:
    if meter.pk is None:
        return False
    built = MeterRollupState.objects.filter(meter_id=meter.pk).values_list("built_at", flat=True)
    built_at = built.first()
    return built_at is not None and built_at >= meter.updated_at
