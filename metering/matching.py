"""Which stored events feed a meter, asked of the database: ``aggregation.matches``'s rule.

A property's text is ``aggregation.property_text``'s. PostgreSQL computes the same text in
SQL (``property_text_sql``); SQLite calls ``property_text`` itself, registered as a function
on each connection. Usage, rebuilds, the events API and the portal all filter through here.
"""

import json
from collections.abc import Iterable
from functools import lru_cache

from django.db import NotSupportedError
from django.db.models import F, Func, QuerySet, TextField
from django.db.models.lookups import In

from metering.aggregation import property_text

SQLITE_FUNCTION = "tally_property_text"


def property_text_sql(column: str, key: str) -> tuple[str, list]:
    """PostgreSQL SQL and params for the text of property ``key`` of the jsonb ``column``:
    ``->>`` prints strings, booleans and numbers as ``property_text`` does; null, objects
    and arrays give NULL."""
    sql = (
        f"CASE WHEN jsonb_typeof({column} -> %s) IN ('string', 'number', 'boolean') "
        f"THEN {column} ->> %s END"
    )
    return sql, [key, key]


@lru_cache(maxsize=256)  # a row's properties are read once per filter key
def _properties(properties_json: str):
    return json.loads(properties_json)


def sqlite_property_text(properties_json: str | None, key: str) -> str | None:
    """``tally_property_text(properties, key)`` on SQLite."""
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
        raise NotSupportedError(f"PropertyText is not implemented for {connection.vendor}")


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
