"""Metering's storage in PostgreSQL's own SQL: binary arrays, one statement per write.

Ingest inserts events and their unfolded rows in one statement; a fold takes a chunk and
merges it into the rollups in one statement (one snapshot); raw reads aggregate by hour in
the database; the ingest fence is a pair of advisory locks.
"""

from datetime import datetime

import psycopg
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import QuerySet

from catalog.models import Meter
from metering.aggregation import NUMERIC_TEXT, Partial
from metering.models import Event, UnfoldedUsage, UsageDistinct, UsageRollup
from metering.storage.base import (
    DISTINCT_INSERT,
    DISTINCT_MERGE,
    EVENT_INSERT,
    EVENT_TYPES,
    ROLLUP_INSERT,
    ROLLUP_MERGE,
    UNFOLDED_INSERT,
    EventStore,
    NewEvent,
    Selection,
    event_rows,
    feed_values,
)

LOCK_SPACE = 7_150_917  # the first key of Tally's two-key advisory locks


def property_text_sql(column: str, key: str) -> tuple[str, list]:
    """SQL and params for the text of property ``key`` of the jsonb ``column``, as
    ``aggregation.property_text`` gives it: ``->>`` prints strings, booleans and numbers
    that way; null, objects and arrays give NULL."""
    sql = (
        f"CASE WHEN jsonb_typeof({column} -> %s) IN ('string', 'number', 'boolean') "
        f"THEN {column} ->> %s END"
    )
    return sql, [key, key]


# Events and what they feed, in one statement: each feed joins the event row it belongs to,
# so replays (not inserted) feed nothing, and the client never handles the new ids.
_INGEST_SQL = (
    f"WITH new AS ({EVENT_INSERT} SELECT * FROM unnest("
    + ", ".join(f"%b::{t}[]" for t in EVENT_TYPES)
    + ") ON CONFLICT (event_id) DO NOTHING "
    "RETURNING id, event_id, external_customer_id, timestamp), "
    f"fed AS ({UNFOLDED_INSERT} SELECT new.id, f.meter_id, new.external_customer_id, "
    "new.timestamp, f.value::numeric, f.unique_value FROM unnest(%b::text[], %b::text[], "
    "%b::text[], %b::text[]) AS f(event_key, meter_id, value, unique_value) "
    "JOIN new ON new.event_id = f.event_key) "
    "SELECT event_id FROM new"
)
_FRESH_SQL = _INGEST_SQL.replace(" ON CONFLICT (event_id) DO NOTHING", "")


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


def _partials_query(meter: Meter, selection: Selection) -> tuple[str, list]:
    """SQL for the selected raw events by (customer, hour), with ``matching``'s rules: every
    filter key's text among its values, only numeric text for numeric meters, and a text of
    at most 255 characters for COUNT_UNIQUE. Its columns are those of a rollup row, then the
    distinct values."""
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
    if meter.aggregation == Meter.Aggregation.COUNT_UNIQUE:
        unique, select_params = property_text_sql("properties", meter.field)
        fed_where = "u IS NOT NULL AND char_length(u) <= 255"
    elif meter.aggregation != Meter.Aggregation.COUNT:
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


def _partial(row) -> Partial:
    """A row of ``_partials_query`` as a partial."""
    _, _, _, count, total, maximum, latest_at, latest, value_time, distinct = row
    return Partial(
        count=count,
        total=total,
        maximum=maximum,
        latest_at=latest_at,
        latest_value=latest,
        value_time_total=value_time,
        distinct=set(distinct),
    )


class PostgresStore(EventStore):
    vendor = "postgresql"

    def insert_rows(self, *, head: str, types: list[str], rows: list[list], tail: str) -> list:
        """The rows go in as one binary array per column, in the current transaction: a
        short statement, cheap to build here and to parse there."""
        if not rows:
            return []
        arrays = ", ".join(f"%b::{t}[]" for t in types)
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                f"{head} SELECT * FROM unnest({arrays}) {tail}",
                [list(c) for c in zip(*rows, strict=True)],
            )
            return cursor.fetchall() if cursor.description else []

    def events_insert(self, *, events: list[NewEvent], now: datetime) -> set[str]:
        rows = event_rows(events, now)
        feeds = [[e.event_id, *fed] for e in events for fed in feed_values(e)]
        if not feeds:
            returned = self.insert_rows(
                head=EVENT_INSERT,
                types=EVENT_TYPES,
                rows=rows,
                tail="ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            )
            return {event_id for (event_id,) in returned}
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            columns = [list(c) for c in zip(*rows, strict=True)]
            params = columns + [list(c) for c in zip(*feeds, strict=True)]
            try:
                with transaction.atomic():  # a replayed event id undoes only this attempt
                    cursor.execute(_FRESH_SQL, params)
            except psycopg.errors.UniqueViolation:
                cursor.execute(_INGEST_SQL, params)
            return {event_id for (event_id,) in cursor.fetchall()}

    def fold_chunk(self, *, limit: int) -> int:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL jit = off")  # compiling costs more than it saves here
            cursor.execute(_FOLD_SQL, [limit])
            (moved,) = cursor.fetchone()
        return int(moved) if moved else 0

    def meter_rebuild(self, *, meter: Meter) -> int:
        UsageRollup.objects.filter(meter=meter).delete()
        UsageDistinct.objects.filter(meter=meter).delete()
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
        return int(count)

    def hourly_partials_many(self, *, parts: list[tuple[Meter, Selection]]) -> list[dict]:
        """One statement for all the parts: each part's rows carry its index."""
        if not parts:
            return []
        queries, params = [], []
        for i, (meter, selection) in enumerate(parts):
            query, query_params = _partials_query(meter, selection)
            queries.append(f"({query})")
            params += [str(i), *query_params[1:]]  # the index in place of the meter's id
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join(queries), params)
            rows = cursor.fetchall()
        found: list[dict] = [{} for _ in parts]
        for row in rows:
            found[int(row[0])][row[1], row[2]] = _partial(row)
        return found

    def hourly_partials(self, *, meter: Meter, selection: Selection) -> dict:
        with connection.cursor() as cursor:
            cursor.execute(*_partials_query(meter, selection))
            rows = cursor.fetchall()
        return {(row[1], row[2]): _partial(row) for row in rows}

    def property_keys(self, *, events: QuerySet) -> list[str]:
        """The distinct keys in one pass of the database, however many events match."""
        try:
            sql, params = events.order_by().values("properties").query.sql_with_params()
        except EmptyResultSet:  # a queryset Django knows selects nothing
            return []
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT DISTINCT key FROM ({sql}) AS selected, "
                "jsonb_object_keys(CASE jsonb_typeof(selected.properties) WHEN 'object' "
                "THEN selected.properties ELSE '{}'::jsonb END) AS key",
                params,
            )
            return sorted(key for (key,) in cursor.fetchall())

    def ingest_fence_share(self, *, slots: list[int]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_advisory_xact_lock_shared(%s, s)) FROM unnest(%s::int[]) AS s",
                [LOCK_SPACE, slots],
            )

    def usage_fence_lock(self, *, slot: int) -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_SPACE, slot])

    def estimated_event_count(self) -> int | None:
        """The planner's estimate: counting a billion-row log is slow."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                [Event._meta.db_table],
            )
            row = cursor.fetchone()
        return row[0] if row else None
