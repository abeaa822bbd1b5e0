"""The one interface to metering's storage: events, unfolded usage, rollups and the fence.

Everything that depends on the database behind Django lives in this package, as Lago's
event stores do: ``PostgresStore`` runs PostgreSQL's own SQL, ``PortableStore`` runs on
SQLite (and on PostgreSQL too, which the contract tests use). ``storage()`` picks one for
the current connection; no other module asks which database it runs on.

What both implementations share is here: the rollup-row ↔ ``Partial`` mappings, the reads
the ORM expresses the same everywhere, and the fold version that readers check.
"""

from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from django.db import connection
from django.db.models import F, Max, QuerySet, Sum
from django.db.models.functions import Trunc

from catalog.models import Meter
from metering.aggregation import Partial, matches, meter_value
from metering.models import Event, FoldState, UnfoldedUsage, UsageDistinct, UsageRollup


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class Selection:
    """Which raw events of a meter's event name to aggregate."""

    customer: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    after_id: int | None = None  # only events stored after this one: late usage


class NewEvent(Protocol):
    """An event parsed at ingest (``ingestion.EventIn``), as storage reads it."""

    event_id: str
    event_name: str
    external_customer_id: str
    timestamp: datetime
    properties_json: str
    source: str
    feeds: tuple  # ((meter, value), ...)


def feed_values(event: NewEvent):
    """(meter id, numeric value, COUNT_UNIQUE value) for each meter the event feeds."""
    for meter, value in event.feeds:
        if isinstance(value, str):
            yield meter.pk, None, value
        else:  # as text: psycopg dumps Decimals in Python, several times slower than str()
            yield meter.pk, None if value is None else str(value), None


def event_rows(events: list[NewEvent], now: datetime) -> list[list]:
    """Rows for ``EVENT_INSERT``."""
    return [
        [
            e.event_id,
            e.event_name,
            e.external_customer_id,
            e.timestamp,
            now,
            e.source,
            e.properties_json,
        ]
        for e in events
    ]


# --- SQL both implementations write with ---------------------------------------------------

EVENT_INSERT = (
    f"INSERT INTO {Event._meta.db_table} (event_id, event_name, external_customer_id, "
    "timestamp, ingested_at, source, properties)"
)
EVENT_TYPES = ["text", "text", "text", "timestamptz", "timestamptz", "text", "jsonb"]
UNFOLDED_INSERT = (
    f"INSERT INTO {UnfoldedUsage._meta.db_table} (event_id, meter_id, external_customer_id, "
    "timestamp, value, unique_value)"
)
UNFOLDED_TYPES = ["bigint", "text", "text", "timestamptz", "numeric", "text"]

_TABLE = UsageRollup._meta.db_table
ROLLUP_INSERT = (
    f"INSERT INTO {_TABLE} (meter_id, external_customer_id, bucket, event_count, value_sum, "
    "value_max, latest_at, latest_value, value_time_sum)"
)
ROLLUP_TYPES = [
    "text",
    "text",
    "timestamptz",
    "bigint",
    "numeric",
    "numeric",
    "timestamptz",
    "numeric",
    "numeric",
]
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
DISTINCT_TYPES = ["text", "text", "timestamptz", "text"]
DISTINCT_MERGE = "ON CONFLICT (meter_id, external_customer_id, bucket, value) DO NOTHING"

TRUNCATED_WINDOWS = {"DAY": "day", "WEEK": "week", "MONTH": "month"}


class EventStore(ABC):
    """Metering's storage. Methods that write run inside the caller's transaction."""

    vendor = "portable"

    # --- writing: what each implementation does its own way ------------------------------

    @abstractmethod
    def insert_rows(self, *, head: str, types: list[str], rows: list[list], tail: str) -> list:
        """``head`` is ``INSERT INTO t (columns)``; returns what ``tail``'s RETURNING gives."""

    @abstractmethod
    def events_insert(self, *, events: list[NewEvent], now: datetime) -> set[str]:
        """Insert the events not stored yet (first write wins), and one unfolded row for each
        meter each new one feeds; the event ids inserted."""

    @abstractmethod
    def fold_chunk(self, *, limit: int) -> int:
        """Move the oldest unfolded rows, up to ``limit``, into the rollups; how many moved.
        The caller holds ``fold_lock``."""

    @abstractmethod
    def meter_rebuild(self, *, meter: Meter) -> int:
        """Replace one meter's rollups by those of every stored event, dropping its unfolded
        rows in the same snapshot; how many events feed it. The caller holds ``fold_lock``."""

    @abstractmethod
    def hourly_partials(self, *, meter: Meter, selection: Selection) -> dict:
        """Partials of the selected raw events that feed ``meter``, by (customer, hour)."""

    @abstractmethod
    def ingest_fence_share(self, *, slots: list[int]) -> None:
        """In ingest's transaction: hold these customer slots shared until the commit."""

    @abstractmethod
    def usage_fence_lock(self, *, slot: int) -> None:
        """In a closing transaction: hold this slot exclusively until the commit."""

    @abstractmethod
    def property_keys(self, *, events: QuerySet) -> list[str]:
        """Every property key of the selected events, sorted: a CSV export's columns."""

    def estimated_event_count(self) -> int | None:
        """A cheap estimate of how many events are stored; None where there is none."""
        return None

    # --- shared: the fold version -------------------------------------------------------

    def fold_lock(self) -> None:
        """Serialise folds and rebuilds; on SQLite this write takes the database's write
        lock."""
        FoldState.objects.get_or_create(pk=1)
        FoldState.objects.select_for_update().filter(pk=1).update(version=F("version"))

    def fold_version_bump(self) -> None:
        """Readers that saw the version before this commit retry: the rollups moved."""
        FoldState.objects.filter(pk=1).update(version=F("version") + 1)

    def fold_version(self) -> int:
        return FoldState.objects.filter(pk=1).values_list("version", flat=True).first() or 0

    def usage_state(self, *, customer: str) -> tuple:
        """In one snapshot: the fold version, and how many unfolded rows the customer has and
        the highest of their ids. Every committed event that feeds a built meter adds such a
        row, and rows leave only with a fold or a rebuild, which move the version (or with
        their meter): while this stays the same, so does every reading of the customer."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT (SELECT version FROM {FoldState._meta.db_table} WHERE id = 1), "
                f"count(*), max(id) FROM {UnfoldedUsage._meta.db_table} "
                "WHERE external_customer_id = %s",
                [customer],
            )
            return tuple(cursor.fetchone())

    def usage_fence_peek(self) -> int:
        """The highest event id now: a reader that takes it first saw nothing above it."""
        return Event.objects.aggregate(highest=Max("id"))["highest"] or 0

    # --- shared: writing rollups from partials --------------------------------------------

    def rollups_write(self, *, meter_id, partials: dict[tuple[str, datetime], Partial]) -> None:
        """Add partials keyed by (customer, hour) into one meter's rollups."""
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
            self.insert_rows(
                head=ROLLUP_INSERT,
                types=ROLLUP_TYPES,
                rows=rows[first : first + 2000],
                tail=ROLLUP_MERGE,
            )
        for first in range(0, len(distinct), 5000):
            self.insert_rows(
                head=DISTINCT_INSERT,
                types=DISTINCT_TYPES,
                rows=distinct[first : first + 5000],
                tail=DISTINCT_MERGE,
            )

    # --- shared: reading ------------------------------------------------------------------

    def raw_partials(self, *, meter: Meter, selection: Selection, key: Callable) -> dict:
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

    def unfolded_partials(self, *, key: Callable, **filters) -> dict:
        """Partials of the unfolded rows that match ``filters``, by ``key(row)``."""
        partials: dict = defaultdict(Partial)
        rows = UnfoldedUsage.objects.filter(**filters).order_by("timestamp", "event_id")
        columns = ("meter_id", "external_customer_id", "timestamp", "value", "unique_value")
        for row in rows.only(*columns):
            partials[key(row)].add(row.timestamp, row.fed)
        return partials

    def unfolded_by_hour(self, *, meter: Meter, customer: str, start: datetime, end: datetime):
        """What the rollups of ``[start, end)`` do not hold yet, by hour."""
        return self.unfolded_partials(
            key=lambda row: hour_of(row.timestamp),
            meter=meter,
            external_customer_id=customer,
            timestamp__gte=start,
            timestamp__lt=end,
        )

    def _rollups(self, meter: Meter, customer: str, start: datetime, end: datetime):
        return UsageRollup.objects.filter(
            meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
        )

    def _distinct(self, meter: Meter, customer: str, start: datetime, end: datetime):
        return UsageDistinct.objects.filter(
            meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
        )

    def rollup_total(self, *, meter: Meter, customer: str, start: datetime, end: datetime):
        """All whole hours of ``[start, end)`` as one partial, summed in the database."""
        rollups = self._rollups(meter, customer, start, end)
        sums = rollups.aggregate(
            count=Sum("event_count"),
            total=Sum("value_sum"),
            maximum=Max("value_max"),
            value_time=Sum("value_time_sum"),
        )
        latest = (
            rollups.exclude(latest_at=None)
            .order_by("-latest_at")
            .values_list("latest_at", "latest_value")
            .first()
        )
        partial = Partial(
            count=sums["count"] or 0,
            total=sums["total"] or Decimal(0),
            maximum=sums["maximum"],
            latest_at=latest[0] if latest else None,
            latest_value=latest[1] if latest else None,
            value_time_total=sums["value_time"] or Decimal(0),
        )
        if meter.aggregation == Meter.Aggregation.COUNT_UNIQUE:
            partial.distinct = set(
                self._distinct(meter, customer, start, end)
                .values_list("value", flat=True)
                .distinct()
            )
        return partial

    def rollup_totals(
        self, *, customer: str, windows: list[tuple[Meter, datetime, datetime]]
    ) -> list[Partial]:
        """``rollup_total`` for several meters' windows, one query a distinct window; a
        LATEST or COUNT_UNIQUE meter, which needs more than sums, is read on its own."""
        found: dict[int, Partial] = {}
        spans: dict[tuple[datetime, datetime], dict[str, list[int]]] = defaultdict(dict)
        for i, (meter, start, end) in enumerate(windows):
            if meter.aggregation in (Meter.Aggregation.LATEST, Meter.Aggregation.COUNT_UNIQUE):
                found[i] = self.rollup_total(meter=meter, customer=customer, start=start, end=end)
            else:
                spans[start, end].setdefault(meter.pk, []).append(i)
        for (start, end), by_meter in spans.items():
            rows = (
                UsageRollup.objects.filter(
                    meter_id__in=list(by_meter),
                    external_customer_id=customer,
                    bucket__gte=start,
                    bucket__lt=end,
                )
                .values("meter_id")
                .annotate(
                    count=Sum("event_count"),
                    total=Sum("value_sum"),
                    maximum=Max("value_max"),
                    value_time=Sum("value_time_sum"),
                )
                .order_by()
            )
            sums = {row["meter_id"]: row for row in rows}
            for meter_id, indexes in by_meter.items():
                row = sums.get(meter_id, {})
                for i in indexes:
                    found[i] = Partial(
                        count=row.get("count") or 0,
                        total=row.get("total") or Decimal(0),
                        maximum=row.get("maximum"),
                        value_time_total=row.get("value_time") or Decimal(0),
                    )
        return [found[i] for i in range(len(windows))]

    def unfolded_totals(
        self, *, customer: str, windows: list[tuple[Meter, datetime, datetime]]
    ) -> list[Partial]:
        """What the rollups of each window do not hold yet, as one partial a window, in one
        query a distinct window."""
        found = [Partial() for _ in windows]
        spans: dict[tuple[datetime, datetime], dict[str, list[int]]] = defaultdict(dict)
        for i, (meter, start, end) in enumerate(windows):
            spans[start, end].setdefault(meter.pk, []).append(i)
        for (start, end), by_meter in spans.items():
            rows = self.unfolded_partials(
                key=lambda row: row.meter_id,
                meter_id__in=list(by_meter),
                external_customer_id=customer,
                timestamp__gte=start,
                timestamp__lt=end,
            )
            for meter_id, partial in rows.items():
                for i in by_meter[meter_id]:
                    found[i].merge(partial)
        return found

    def hourly_partials_many(self, *, parts: list[tuple[Meter, Selection]]) -> list[dict]:
        """``hourly_partials`` of each (meter, selection), in order."""
        return [self.hourly_partials(meter=m, selection=s) for m, s in parts]

    def rollup_hours(
        self, *, meter: Meter, customer: str, start: datetime, end: datetime
    ) -> dict[datetime, Partial]:
        """The whole hours of ``[start, end)``, a partial each."""
        partials: dict[datetime, Partial] = {}
        rows = self._rollups(meter, customer, start, end).values_list(
            "bucket",
            "event_count",
            "value_sum",
            "value_max",
            "latest_at",
            "latest_value",
            "value_time_sum",
        )
        for bucket, count, total, maximum, latest_at, latest_value, value_time in rows:
            partials[bucket] = Partial(
                count=count,
                total=total,
                maximum=maximum,
                latest_at=latest_at,
                latest_value=latest_value,
                value_time_total=value_time,
            )
        if meter.aggregation == Meter.Aggregation.COUNT_UNIQUE:
            distinct = self._distinct(meter, customer, start, end).values_list("bucket", "value")
            for bucket, value in distinct:
                partials.setdefault(bucket, Partial()).distinct.add(value)
        return partials

    def rollup_windows(
        self, *, meter: Meter, customer: str, start: datetime, end: datetime, size: str
    ) -> dict[datetime, Partial]:
        """Whole hours summed per day, week or month (``TRUNCATED_WINDOWS``) in the database;
        not for LATEST or COUNT_UNIQUE, which need the hours themselves."""
        rows = (
            self._rollups(meter, customer, start, end)
            .annotate(window=Trunc("bucket", TRUNCATED_WINDOWS[size], tzinfo=UTC))
            .values("window")
            .annotate(
                count=Sum("event_count"),
                total=Sum("value_sum"),
                maximum=Max("value_max"),
                value_time=Sum("value_time_sum"),
            )
        )
        return {
            row["window"]: Partial(
                count=row["count"],
                total=row["total"],
                maximum=row["maximum"],
                value_time_total=row["value_time"],
            )
            for row in rows
        }


def by_meter(partials: Iterable[tuple[tuple, Partial]]) -> dict:
    """Partials keyed (meter id, customer, hour) as {meter id: {(customer, hour): partial}}."""
    grouped: dict = defaultdict(dict)
    for (meter_id, customer, bucket), partial in partials:
        grouped[meter_id][customer, bucket] = partial
    return grouped
