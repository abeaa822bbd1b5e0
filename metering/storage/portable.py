"""Metering's storage in portable SQL and the ORM: SQLite, and any database Django speaks.

SQLite lets one transaction write at a time, so ingest needs no fence lock and a fold's
chunk is whatever is unfolded when it takes the write lock. It also runs on PostgreSQL,
where the contract tests check it against ``PostgresStore``.
"""

import json
from datetime import datetime
from functools import lru_cache

from django.db import connection
from django.db.models import QuerySet

from catalog.models import Meter
from metering.aggregation import property_text
from metering.models import UnfoldedUsage, UsageDistinct, UsageRollup
from metering.storage.base import (
    EVENT_INSERT,
    EVENT_TYPES,
    UNFOLDED_INSERT,
    UNFOLDED_TYPES,
    EventStore,
    NewEvent,
    Selection,
    by_meter,
    event_rows,
    feed_values,
    hour_of,
)

SQLITE_FUNCTION = "tally_property_text"


@lru_cache(maxsize=256)  # a row's properties are read once per filter key
def _properties(properties_json: str):
    return json.loads(properties_json)


def sqlite_property_text(properties_json: str | None, key: str) -> str | None:
    """``tally_property_text(properties, key)`` on SQLite: ``aggregation.property_text``."""
    if properties_json is None:
        return None
    properties = _properties(properties_json)
    if not isinstance(properties, dict) or key not in properties:
        return None
    return property_text(properties[key])


def sqlite_functions_register(*, connection, **kwargs) -> None:
    """For the ``connection_created`` signal."""
    if connection.vendor == "sqlite":
        connection.connection.create_function(
            SQLITE_FUNCTION, 2, sqlite_property_text, deterministic=True
        )


class PortableStore(EventStore):
    vendor = "portable"

    def insert_rows(self, *, head: str, types: list[str], rows: list[list], tail: str) -> list:
        """As VALUES, with timestamps adapted as the connection stores them."""
        if not rows:
            return []
        ops = connection.ops
        adapt = [ops.adapt_datetimefield_value if t == "timestamptz" else None for t in types]
        params = [
            f(v) if f and v is not None else v
            for row in rows
            for f, v in zip(adapt, row, strict=True)
        ]
        values = ", ".join(["(" + ", ".join(["%s"] * len(types)) + ")"] * len(rows))
        with connection.cursor() as cursor:
            cursor.execute(f"{head} VALUES {values} {tail}", params)
            return cursor.fetchall() if cursor.description else []

    def events_insert(self, *, events: list[NewEvent], now: datetime) -> set[str]:
        returned = self.insert_rows(
            head=EVENT_INSERT,
            types=EVENT_TYPES,
            rows=event_rows(events, now),
            tail="ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id",
        )
        pk_of = {event_id: pk for pk, event_id in returned}
        self.insert_rows(
            head=UNFOLDED_INSERT,
            types=UNFOLDED_TYPES,
            rows=[
                [pk_of[e.event_id], meter_id, e.external_customer_id, e.timestamp, value, unique]
                for e in events
                if e.event_id in pk_of
                for meter_id, value, unique in feed_values(e)
            ],
            tail="",
        )
        return set(pk_of)

    def fold_chunk(self, *, limit: int) -> int:
        ids = list(UnfoldedUsage.objects.order_by("id").values_list("id", flat=True)[:limit])
        if not ids:
            return 0
        taken = self.unfolded_partials(
            key=lambda row: (row.meter_id, row.external_customer_id, hour_of(row.timestamp)),
            id__lte=ids[-1],  # nothing else can commit: fold_lock holds SQLite's write lock
        )
        UnfoldedUsage.objects.filter(id__lte=ids[-1]).delete()
        grouped = by_meter(taken.items())
        for meter_id in Meter.objects.filter(pk__in=grouped).values_list("pk", flat=True):
            self.rollups_write(meter_id=meter_id, partials=grouped[meter_id])
        return len(ids)

    def meter_rebuild(self, *, meter: Meter) -> int:
        UsageRollup.objects.filter(meter=meter).delete()
        UsageDistinct.objects.filter(meter=meter).delete()
        UnfoldedUsage.objects.filter(meter=meter).delete()
        partials = self.hourly_partials(meter=meter, selection=Selection())
        self.rollups_write(meter_id=meter.pk, partials=partials)
        return sum(p.count for p in partials.values())

    def hourly_partials(self, *, meter: Meter, selection: Selection) -> dict:
        return self.raw_partials(
            meter=meter,
            selection=selection,
            key=lambda customer, moment: (customer, hour_of(moment)),
        )

    def property_keys(self, *, events: QuerySet) -> list[str]:
        keys: set[str] = set()
        for properties in events.order_by().values_list("properties", flat=True).iterator(2000):
            if isinstance(properties, dict):
                keys.update(properties)
        return sorted(keys)

    def ingest_fence_share(self, *, slots: list[int]) -> None:
        """Nothing to do: SQLite lets one transaction write at a time."""

    def usage_fence_lock(self, *, slot: int) -> None:
        self.fold_lock()  # a write: it holds SQLite's write lock until the commit
