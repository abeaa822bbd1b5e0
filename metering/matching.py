"""Which stored events feed a meter, asked of the database: ``aggregation.matches``'s rule.

A property's text is ``aggregation.property_text``'s. PostgreSQL computes the same text in
SQL (``storage.postgres.property_text_sql``); SQLite calls ``property_text`` itself,
registered as a function on each connection (``storage.portable``). Usage, rebuilds, the
events API and the portal all filter through here.
"""

from collections.abc import Iterable

from django.db import NotSupportedError
from django.db.models import F, Func, QuerySet, TextField
from django.db.models.lookups import In

from metering.storage.portable import SQLITE_FUNCTION
from metering.storage.postgres import property_text_sql


class PropertyText(Func):
    """The text of an event property, as filters compare it; NULL when it has none."""

    output_field = TextField()

    def __init__(self, key: str, column: str = "properties"):
        self.key = key
        super().__init__(F(column))

    def as_postgresql(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        sql, _ = property_text_sql(column, self.key)
        return sql, (*params, self.key, *params, self.key)  # the column appears twice

    def as_sqlite(self, compiler, connection, **extra_context):
        column, params = compiler.compile(self.source_expressions[0])
        return f"{SQLITE_FUNCTION}({column}, %s)", (*params, self.key)

    def as_sql(self, compiler, connection, **extra_context):
        raise NotSupportedError("PropertyText is implemented for PostgreSQL and SQLite only")


def events_with_properties(events: QuerySet, *, filters: Iterable[tuple[str, list[str]]]):
    """Events whose property of each key has one of that key's texts; keys are ANDed."""
    for key, values in filters:
        events = events.filter(In(PropertyText(key), list(values)))
    return events


def events_feeding(events: QuerySet, *, meter) -> QuerySet:
    """The events among ``events`` that feed ``meter``: its event name and every filter."""
    return events_with_properties(
        events.filter(event_name=meter.event_name),
        filters=[(item["key"], item["values"]) for item in meter.filters],
    )
