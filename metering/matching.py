"""Which stored events feed a meter, asked of the database: ``aggregation.matches``'s rule.

A property's text is ``aggregation.property_text``'s. PostgreSQL computes the same text in
SQL (``storage.postgres.property_text_sql``); SQLite calls ``property_text`` itself,
registered as a function on each connection (``storage.portable``). Usage, rebuilds, the
events API and the portal all filter through here.
"""

from collections.abc import Iterable

from django.db.models import QuerySet
from django.db.models.lookups import In

from metering.storage.expressions import PropertyText


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
