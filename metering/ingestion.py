"""Event ingestion: validate, and store each event once."""

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from catalog.ids import new_id
from catalog.models import Meter
from config.bounds import moment_parse
from metering.aggregation import matches, meter_value
from metering.fence import ingest_fence_share
from metering.models import Event
from metering.signals import usage_recorded
from metering.storage import storage
from metering.tasks import rollups_fold_request

MAX_BATCH = 1000
MAX_FUTURE = timedelta(minutes=5)
MAX_PROPERTIES_BYTES = 32 * 1024
MAX_DEPTH = 5
MAX_TEXT = 255


class EventRejected(ValueError):
    """An event that cannot be stored; the message says why."""


@dataclass(slots=True)
class EventIn:
    event_id: str
    event_name: str
    external_customer_id: str
    timestamp: datetime
    properties: dict
    properties_json: str  # as stored
    source: str
    feeds: tuple  # ((meter, value), ...) for every meter the event feeds


@dataclass(frozen=True)
class IngestResult:
    stored: list[EventIn]
    duplicates: int


METERS_RECHECK_SECONDS = 1.0
_meters_cache: dict[str, tuple[float, tuple, dict[str, list[Meter]]]] = {}


def meters_by_event_name() -> dict[str, list[Meter]]:
    """Every meter, grouped by event name, cached per process. A change made in this process
    shows at once (``meters_forget``); one made elsewhere within a second, when one tiny
    aggregate query sees it."""
    cached = _meters_cache.get(connection.alias)
    now = time.monotonic()
    if cached is not None and now - cached[0] < METERS_RECHECK_SECONDS:
        return cached[2]
    version = tuple(Meter.objects.aggregate(Count("pk"), Max("updated_at")).values())
    if cached is None or cached[1] != version:
        grouped = defaultdict(list)
        for meter in Meter.objects.select_related("feature"):
            grouped[meter.event_name].append(meter)
        cached = (now, version, dict(grouped))
    _meters_cache[connection.alias] = (now, cached[1], cached[2])
    return cached[2]


def meters_forget(**kwargs) -> None:
    _meters_cache.clear()


def _text(raw: dict, key: str, *, required: bool) -> str:
    value = raw.get(key)
    if value is None or value == "":
        if required:
            raise EventRejected(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise EventRejected(f"{key} must be a string")
    if len(value) > MAX_TEXT:
        raise EventRejected(f"{key} is longer than {MAX_TEXT} characters")
    if not value.isprintable():
        raise EventRejected(f"{key} must be printable characters")
    return value


def _timestamp(raw: dict, now: datetime) -> datetime:
    value = raw.get("timestamp")
    if value is None or value == "":
        return now
    try:
        moment = moment_parse(value)
    except ValueError as error:
        raise EventRejected(f"timestamp {error}") from None
    if moment > now + MAX_FUTURE:
        raise EventRejected("timestamp is more than 5 minutes in the future")
    return moment


def _check_json(value, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise EventRejected(f"properties are nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str) and "\x00" in value:
        raise EventRejected("properties must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                raise EventRejected("properties must not contain NUL characters")
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)


def _json_text(value: dict) -> str:
    """JSON text of parsed JSON; orjson is several times faster, but knows only 64-bit ints."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def _properties(raw: dict) -> tuple[dict, str]:
    """The properties and their JSON text, as stored."""
    properties = raw.get("properties")
    if properties is None:
        return {}, "{}"
    if not isinstance(properties, dict):
        raise EventRejected("properties must be a JSON object")
    text = _json_text(properties)
    if len(text) > MAX_PROPERTIES_BYTES:
        raise EventRejected(f"properties are larger than {MAX_PROPERTIES_BYTES} bytes")
    if "\\u0000" in text or "[" in text or text.count("{") > 1:
        _check_json(properties)  # maybe nested, maybe a NUL: the exact checks
    return properties, text


def event_parse(raw, *, meters: dict[str, list[Meter]], now: datetime) -> EventIn:
    """One event as sent, checked against DESIGN.md's rules and the meters it would feed."""
    if not isinstance(raw, dict):
        raise EventRejected("an event must be a JSON object")
    event_name = _text(raw, "event_name", required=True)
    external_customer_id = _text(raw, "external_customer_id", required=True)
    event_id = _text(raw, "event_id", required=False) or new_id("evt")
    source = _text(raw, "source", required=False)
    timestamp = _timestamp(raw, now)
    properties, properties_json = _properties(raw)
    if event_name not in meters:
        raise EventRejected(f"no meter uses event_name {event_name!r}")
    feeds = []
    for meter in meters[event_name]:
        if not matches(meter, event_name, properties):
            continue
        try:
            feeds.append((meter, meter_value(meter, properties)))
        except ValueError as error:
            raise EventRejected(f"{error} (meter of {meter.feature.lookup_key!r})") from None
    return EventIn(
        event_id=event_id,
        event_name=event_name,
        external_customer_id=external_customer_id,
        timestamp=timestamp,
        properties=properties,
        properties_json=properties_json,
        source=source,
        feeds=tuple(feeds),
    )


@transaction.atomic
def events_ingest(*, events: list[EventIn]) -> IngestResult:
    """Store events not seen before (first write wins), with what each feeds every meter,
    unfolded, in the same commit; the rollups take them in the background."""
    unique: dict[str, EventIn] = {}
    for event in events:
        unique.setdefault(event.event_id, event)
    ingest_fence_share(external_customer_ids={e.external_customer_id for e in unique.values()})
    inserted = _insert_new(list(unique.values()))
    stored = [e for e in unique.values() if e.event_id in inserted]
    if stored:
        customers = {e.external_customer_id for e in stored}
        transaction.on_commit(rollups_fold_request)
        transaction.on_commit(
            lambda: usage_recorded.send(sender=Event, external_customer_ids=customers)
        )
    return IngestResult(stored=stored, duplicates=len(events) - len(stored))


def event_list(data) -> list:
    """The events of a bulk or batch body: 1 to ``MAX_BATCH`` of them."""
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not events:
        raise EventRejected(f'Send {{"events": [...]}} with 1 to {MAX_BATCH} events.')
    if len(events) > MAX_BATCH:
        raise EventRejected(
            f"A batch holds at most {MAX_BATCH} events; this one has {len(events)}."
        )
    return events


def _parse_all(raws: list, now: datetime) -> list:
    """Each event parsed, or the reason it was rejected, in order."""
    meters, parsed = meters_by_event_name(), []
    for raw in raws:
        try:
            parsed.append(event_parse(raw, meters=meters, now=now))
        except EventRejected as error:
            parsed.append(error)
    return parsed


class BulkRejected(EventRejected):
    """A bulk with bad events: ``rejected`` names each by index and reason."""

    def __init__(self, message: str, rejected: list[dict]):
        super().__init__(message)
        self.rejected = rejected


def events_bulk_ingest(*, raws: list, now: datetime) -> IngestResult:
    """All or nothing: one bad event refuses the whole bulk, and each bad one is named."""
    parsed = _parse_all(raws, now)
    rejected = [
        {"index": i, "reason": str(p)} for i, p in enumerate(parsed) if isinstance(p, Exception)
    ]
    if rejected:
        first = rejected[0]
        raise BulkRejected(
            f"{len(rejected)} of {len(raws)} events are invalid; none were stored. "
            f"Event {first['index']}: {first['reason']}",
            rejected,
        )
    return events_ingest(events=parsed)


def events_batch_ingest(*, raws: list, now: datetime) -> list[dict]:
    """Tally's partial batch: the valid events are stored; each event gets its result,
    ``accepted``, ``duplicate`` (stored before, or earlier in this batch) or ``rejected``."""
    parsed = _parse_all(raws, now)
    good = [p for p in parsed if not isinstance(p, Exception)]
    stored = {e.event_id for e in events_ingest(events=good).stored}
    results, seen = [], set()
    for index, item in enumerate(parsed):
        if isinstance(item, Exception):
            results.append({"index": index, "status": "rejected", "reason": str(item)})
            continue
        fresh = item.event_id in stored and item.event_id not in seen
        seen.add(item.event_id)
        status = "accepted" if fresh else "duplicate"
        results.append({"index": index, "event_id": item.event_id, "status": status})
    return results


class _Slot:
    __slots__ = ("event", "outcome", "done")

    def __init__(self, event: EventIn):
        self.event, self.outcome, self.done = event, None, False


class GroupCommit:
    """Single events from concurrent requests of one process, stored in one transaction.

    A request whose event finds no commit running leads: it takes every queued event and
    commits them together, then wakes the rest; one of those still waiting leads next. Each
    request returns only once its own event is committed, so a 2xx still means durable,
    while the commits (and the work after each) are shared by everyone who queued.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self._queue: list[_Slot] = []
        self._leading = False

    def submit(self, event: EventIn) -> bool:
        """Store ``event``; True if it was new."""
        if connection.in_atomic_block:  # the caller's transaction must hold it
            return bool(events_ingest(events=[event]).stored)
        slot = _Slot(event)
        with self._cond:
            self._queue.append(slot)
            while self._leading and not slot.done:
                self._cond.wait()
            if not slot.done:
                self._leading = True
                batch, self._queue = self._queue, []
        if not slot.done:
            outcomes: list = [RuntimeError("the commit was interrupted")] * len(batch)
            try:
                stored = {e.event_id for e in events_ingest(events=[s.event for s in batch]).stored}
                outcomes = [s.event.event_id in stored for s in batch]
            except Exception as error:  # every request in the batch reports it
                outcomes = [error] * len(batch)
            finally:  # whatever happened, the waiting requests hear of it and one leads next
                with self._cond:
                    for waiting, outcome in zip(batch, outcomes, strict=True):
                        waiting.outcome, waiting.done = outcome, True
                    self._leading = False
                    self._cond.notify_all()
        if isinstance(slot.outcome, Exception):
            raise slot.outcome
        return slot.outcome


single_events = GroupCommit()


def _insert_new(events: list[EventIn]) -> set[str]:
    """Insert the events not stored yet, with what each feeds; their event ids."""
    return storage().events_insert(events=events, now=timezone.now())
