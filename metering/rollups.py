"""Hourly rollups per meter and customer, folded from the event log after ingest commits.

Ingest writes each new event with an UnfoldedEvent row, in one transaction, and nothing
else: it never waits on rollup rows. ``rollups_fold`` moves a chunk of unfolded events into
UsageRollup and UsageDistinct in one transaction, aggregated inside PostgreSQL. Usage reads
add the unfolded events from the raw log, so they are exact however far folding lags.
"""

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from catalog.models import Meter
from metering.aggregation import NUMERIC_TEXT, Partial, matches, meter_value
from metering.models import (
    Event,
    FoldState,
    MeterRollupState,
    UnfoldedEvent,
    UsageDistinct,
    UsageRollup,
)

FOLD_CHUNK = 50_000
FOLD_ROUNDS = 20  # chunks per task run; the next run or beat takes the rest
FOLD_FLAG = "tally:rollups-fold"
FOLD_DELAY_SECONDS = 0.5


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Selection:
    """Which raw events of a meter's event name to aggregate."""

    customer: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    unfolded: bool | None = None  # only events not yet folded (True), or only folded (False)
    ids: list[int] | None = None  # only these events (a fold's chunk), in id order


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
    if selection.unfolded is not None:
        unfolded = Q(id__in=UnfoldedEvent.objects.values("id"))
        events = events.filter(unfolded if selection.unfolded else ~unfolded)
    ids = selection.ids
    # SQLite caps a statement's parameters; chunks in id order keep the order of arrival.
    chunks = [None] if ids is None else [ids[i : i + 10_000] for i in range(0, len(ids), 10_000)]
    partials: dict = defaultdict(Partial)
    for chunk in chunks:
        rows = events if chunk is None else events.filter(id__in=chunk)
        for customer, timestamp, properties in rows.order_by("timestamp", "id").values_list(
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
    every filter key's text among its values, and only numeric text for numeric meters.
    Its columns are those of a rollup row after meter_id, then the distinct values."""
    events, unfolded = Event._meta.db_table, UnfoldedEvent._meta.db_table
    where, params, from_params = ["event_name = %s"], [meter.event_name], []
    for column, op, value in (
        ("external_customer_id", "=", selection.customer),
        ("timestamp", ">=", selection.start),
        ("timestamp", "<", selection.end),
    ):
        if value is not None:
            where.append(f"{column} {op} %s")
            params.append(value)
    # A few ids drive the scan: each is looked up by primary key. OFFSET 0 keeps the planner
    # from turning that round, whatever its statistics of a table that churns say.
    source = f"{events}"
    if selection.ids is not None:
        driver = "SELECT unnest(string_to_array(%s, ',')::bigint[]) AS driver_id"
        from_params.append(",".join(map(str, selection.ids)))
    elif selection.unfolded:
        driver = f"SELECT id AS driver_id FROM {unfolded}"
    else:
        driver = None
    if driver:
        source = (
            f"({driver}) AS d CROSS JOIN LATERAL "
            f"(SELECT * FROM {events} WHERE id = d.driver_id OFFSET 0) AS e"
        )
    if selection.unfolded is False:
        where.append(f"id NOT IN (SELECT id FROM {unfolded})")
    for item in meter.filters:
        where.append("properties ->> %s = ANY(%s)")
        params += [item["key"], list(item["values"])]
    value, unique, select_params = "NULL::numeric", "NULL::text", []
    if meter.aggregation == "COUNT_UNIQUE":
        unique = "properties ->> %s"
        select_params.append(meter.field)
        where.append("properties ->> %s IS NOT NULL")
        params.append(meter.field)
    elif meter.aggregation != "COUNT":
        value = "(properties ->> %s)::numeric"
        select_params.append(meter.field)
        where.append("properties ->> %s ~ %s")
        params += [meter.field, NUMERIC_TEXT]
    sql = (
        "SELECT external_customer_id, date_trunc('hour', timestamp) AS bucket, "
        "count(*) AS event_count, coalesce(sum(v), 0) AS value_sum, max(v) AS value_max, "
        "max(timestamp) FILTER (WHERE v IS NOT NULL) AS latest_at, "
        "(array_agg(v ORDER BY timestamp DESC, id DESC))[1] AS latest_value, "
        "coalesce(sum(v * extract(epoch FROM timestamp)), 0) AS value_time_sum, "
        "array_remove(array_agg(DISTINCT u), NULL) AS distinct_values "
        f"FROM (SELECT id, external_customer_id, timestamp, {value} AS v, {unique} AS u "
        f"FROM {source} WHERE {' AND '.join(where)}) AS fed GROUP BY 1, 2"
    )
    return sql, select_params + from_params + params


def _sql_partials(meter, selection: Selection) -> dict:
    with connection.cursor() as cursor:
        cursor.execute(*_partials_query(meter, selection))
        rows = cursor.fetchall()
    partials = {}
    for customer, bucket, count, total, maximum, latest_at, latest_value, vt, distinct in rows:
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


def _sql_fold(meter, selection: Selection) -> None:
    """Aggregate the selected events into one meter's rollups in one statement inside
    PostgreSQL: no rollup row travels through Python."""
    query, params = _partials_query(meter, selection)
    columns = (
        "external_customer_id, bucket, event_count, value_sum, value_max, latest_at, "
        "latest_value, value_time_sum"
    )
    sql = (
        f"WITH fed AS MATERIALIZED ({query}), "
        f"rolled AS ({ROLLUP_INSERT} SELECT %s, {columns} FROM fed {ROLLUP_MERGE}) "
        f"{DISTINCT_INSERT} SELECT %s, external_customer_id, bucket, unnest(distinct_values) "
        f"FROM fed {DISTINCT_MERGE}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, meter.pk, meter.pk])


def _fold_into(meter, selection: Selection) -> None:
    """Add the selected events into one meter's rollups."""
    if connection.vendor == "postgresql":
        _sql_fold(meter, selection)
    else:
        rollups_write(meter.pk, hourly_partials(meter, selection))


def fold_lock() -> None:
    """Serialise folds and rebuilds (SQLite serialises writers anyway)."""
    FoldState.objects.select_for_update().get_or_create(pk=1)


def _version_bump() -> None:
    """Readers that saw the version before this commit retry: the rollups moved."""
    FoldState.objects.filter(pk=1).update(version=F("version") + 1)


def fold_version() -> int:
    return FoldState.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def _unfolded_take(limit: int) -> list[int]:
    """Remove the oldest unfolded rows, up to ``limit``; their event ids, in order."""
    table = UnfoldedEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT %s) "
            "RETURNING id",
            [limit],
        )
        return sorted(row[0] for row in cursor.fetchall())


def rollups_fold(*, limit: int = FOLD_CHUNK, rounds: int = FOLD_ROUNDS) -> int:
    """Fold unfolded events into every meter's rollups, oldest first, a chunk per
    transaction. Returns how many events were folded."""
    from metering.ingestion import meters_by_event_name

    folded = 0
    for _ in range(rounds):
        with transaction.atomic():
            fold_lock()
            ids = _unfolded_take(limit)
            if ids:
                for meters in meters_by_event_name().values():
                    for meter in meters:
                        _fold_into(meter, Selection(ids=ids))
                _version_bump()
        folded += len(ids)
        if len(ids) < limit:
            break
    return folded


def rollups_fold_request() -> None:
    """Ask for a fold soon, coalescing bursts of ingest into one task."""
    from metering.tasks import rollups_fold_task

    if cache.add(FOLD_FLAG, 1, timeout=60):
        rollups_fold_task.apply_async(countdown=FOLD_DELAY_SECONDS)


@transaction.atomic
def meter_rollups_rebuild(*, meter: Meter) -> int:
    """Recompute one meter's rollups from every folded event, after the meter is created or
    changed; returns how many events feed it. Unfolded events reach it at their fold."""
    fold_lock()
    MeterRollupState.objects.update_or_create(meter=meter, defaults={"built_at": timezone.now()})
    UsageRollup.objects.filter(meter=meter).delete()
    UsageDistinct.objects.filter(meter=meter).delete()
    _fold_into(meter, Selection(unfolded=False))
    _version_bump()
    return UsageRollup.objects.filter(meter=meter).aggregate(n=Sum("event_count"))["n"] or 0


def stale_meters():
    """Meters changed since their rollups were last built, or never built."""
    return Meter.objects.filter(
        Q(rollup_state__isnull=True) | Q(rollup_state__built_at__lt=F("updated_at"))
    )


def rollups_ready(meter) -> bool:
    if meter.pk is None:
        return False
    built = MeterRollupState.objects.filter(meter_id=meter.pk).values_list("built_at", flat=True)
    built_at = built.first()
    return built_at is not None and built_at >= meter.updated_at
