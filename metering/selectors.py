"""Usage reads. Whole hours come from the rollups plus the rows not folded into them yet;
only the partial hours at the edges of a window read raw events, so cost does not grow
with the number of events."""

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from django.core.cache import cache
from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import TruncDay

from catalog import names
from catalog.models import Meter
from metering.aggregation import ZERO, Partial, matches, property_text, quantity
from metering.matching import events_feeding
from metering.models import ApiKey, Customer, Event, UsageRollup
from metering.rollups import rollups_ready, rollups_ready_among
from metering.storage import Selection, hour_of, storage
from metering.storage.base import TRUNCATED_WINDOWS

HOUR = timedelta(hours=1)
SUB_HOUR_WINDOWS = {"MINUTE": 1, "15MIN": 15, "30MIN": 30}
HOURLY_WINDOWS = {"HOUR": 1, "3HOUR": 3, "6HOUR": 6, "12HOUR": 12}
WINDOW_SIZES = {*SUB_HOUR_WINDOWS, *HOURLY_WINDOWS, "DAY", "WEEK", "MONTH"}


def window_floor(moment: datetime, size: str) -> datetime:
    """The start of the UTC window of ``size`` that holds ``moment``."""
    moment = moment.astimezone(UTC)
    if size in SUB_HOUR_WINDOWS:
        step = SUB_HOUR_WINDOWS[size]
        return moment.replace(minute=moment.minute - moment.minute % step, second=0, microsecond=0)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if size in HOURLY_WINDOWS:
        return hour.replace(hour=hour.hour - hour.hour % HOURLY_WINDOWS[size])
    day = hour.replace(hour=0)
    if size == "DAY":
        return day
    if size == "WEEK":
        return day - timedelta(days=day.weekday())
    if size == "MONTH":
        return day.replace(day=1)
    raise ValueError(f"unknown window size {size!r}")


READ_ATTEMPTS = 3


def consistent_with_folds(read):
    """``read()``'s result from one state of the rollups: several queries must not straddle a
    fold's commit, or its events would be counted twice or not at all."""
    store = storage()
    for _ in range(READ_ATTEMPTS):
        version = store.fold_version()
        result = read()
        if store.fold_version() == version:
            return result
    with transaction.atomic():
        store.fold_lock()  # folds wait for this read
        return read()


def _edges(meter, customer: str, start: datetime, end: datetime) -> dict:
    """Raw events of ``[start, end)`` by hour: a window's partial edge hours."""
    selection = Selection(customer=customer, start=start, end=end)
    found = storage().hourly_partials(meter=meter, selection=selection)
    return {bucket: p for (_, bucket), p in found.items()}


def usage_partials(
    *,
    meter: Meter,
    external_customer_id: str,
    start: datetime,
    end: datetime,
    use_rollups: bool = True,
    by_hour: bool = True,
    window_size: str | None = None,
) -> list[tuple[datetime, Partial]]:
    """Partials by hour over ``[start, end)``; by event time when rollups are not used.

    With ``by_hour`` off, the whole hours come back as one partial, for a total; with a
    day, week or month ``window_size``, as one partial a window where the meter allows.
    """
    use_rollups = use_rollups and rollups_ready(meter)
    if not use_rollups:
        selection = Selection(customer=external_customer_id, start=start, end=end)
        found = storage().raw_partials(
            meter=meter, selection=selection, key=lambda _, moment: moment
        )
        return sorted(found.items(), key=lambda item: item[0])
    first_full = hour_of(start) if hour_of(start) == start else hour_of(start) + HOUR
    last_full = hour_of(end)
    if first_full >= last_full:
        return sorted(_edges(meter, external_customer_id, start, end).items())
    store = storage()
    whole = dict(meter=meter, customer=external_customer_id, start=first_full, end=last_full)
    by_window = (
        window_size in TRUNCATED_WINDOWS and meter.aggregation not in names.HOURLY_ONLY_AGGREGATIONS
    )

    def read_whole_hours():
        if by_window:
            middle = store.rollup_windows(**whole, size=window_size)
        elif by_hour:
            middle = store.rollup_hours(**whole)
        else:
            middle = {first_full: store.rollup_total(**whole)}
        return middle, store.unfolded_by_hour(**whole)

    middle, unfolded = consistent_with_folds(read_whole_hours)
    found: dict[datetime, Partial] = {}
    # In time order, so a LATEST tie goes to the later part; keys may coincide.
    for part in (
        _edges(meter, external_customer_id, start, first_full),
        middle,
        unfolded,
        _edges(meter, external_customer_id, last_full, end),
    ):
        for moment, partial in part.items():
            found.setdefault(moment, Partial()).merge(partial)
    return sorted(found.items(), key=lambda item: item[0])


@dataclass(frozen=True)
class Reading:
    quantity: Decimal
    event_count: int  # the events behind it


def meter_reading(
    *,
    meter: Meter,
    external_customer_id: str,
    start: datetime,
    end: datetime,
    use_rollups: bool = True,
) -> Reading:
    """The exact quantity of ``meter`` for one customer over ``[start, end)``, and how many
    events it counts. ``use_rollups=False`` reads raw events only, for a meter not saved."""
    total = Partial()
    for _, partial in usage_partials(
        meter=meter,
        external_customer_id=external_customer_id,
        start=start,
        end=end,
        use_rollups=use_rollups,
        by_hour=False,
    ):
        total.merge(partial)
    return Reading(quantity(meter, total, start, end), total.count)


READINGS_CACHE_SECONDS = 3600


def usage_state(*, external_customer_id: str) -> tuple:
    """What moves whenever an event of the customer is committed or folded: readings made
    in one state hold while it stays (``EventStore.usage_state``)."""
    return storage().usage_state(customer=external_customer_id)


def meter_readings(
    *, external_customer_id: str, windows: list[tuple[Meter, datetime, datetime]]
) -> list[Reading]:
    """``meter_reading`` of each (meter, start, end) for one customer, in a fixed number of
    queries however many meters: rollup sums, unfolded rows and the raw edge hours of all
    windows are read together. A meter whose rollups are not ready is read on its own.

    Readings of built meters are cached under the customer's usage state
    (``EventStore.usage_state``), which any event the customer commits moves: a cached
    reading is served only while no event has been stored or folded since it was read."""
    if not windows:
        return []
    ready = rollups_ready_among(meter for meter, _, _ in windows)
    if any(meter.pk not in ready for meter, _, _ in windows):
        return _meter_readings(external_customer_id, windows, ready)
    state = usage_state(external_customer_id=external_customer_id)
    signature = repr(
        [(m.pk, m.updated_at.isoformat(), s.isoformat(), e.isoformat()) for m, s, e in windows]
    )
    key = (
        "tally:readings:"
        + hashlib.sha256(f"{external_customer_id}|{state}|{signature}".encode()).hexdigest()
    )
    readings = cache.get(key)
    if readings is None:
        readings = _meter_readings(external_customer_id, windows, ready)
        # Only what was read in one state: no event committed or folded meanwhile.
        if usage_state(external_customer_id=external_customer_id) == state:
            cache.set(key, readings, READINGS_CACHE_SECONDS)
    return readings


def _meter_readings(external_customer_id, windows, ready) -> list[Reading]:
    """``meter_readings`` read now: per window, its start edge, whole hours (rollup sums and
    unfolded rows, in one fold state) and end edge, merged in time order."""
    readings: dict[int, Reading] = {}
    whole, edges, batched = [], [], []
    for i, (meter, start, end) in enumerate(windows):
        if meter.pk not in ready:
            readings[i] = meter_reading(
                meter=meter, external_customer_id=external_customer_id, start=start, end=end
            )
            continue
        first_full = hour_of(start) if hour_of(start) == start else hour_of(start) + HOUR
        last_full = hour_of(end)
        customer = external_customer_id
        if first_full >= last_full:  # no whole hour: the window is one edge
            edges += [(meter, Selection(customer=customer, start=start, end=end))]
            batched.append((i, None))
            continue
        edges += [
            (meter, Selection(customer=customer, start=start, end=first_full)),
            (meter, Selection(customer=customer, start=last_full, end=end)),
        ]
        batched.append((i, len(whole)))
        whole.append((meter, first_full, last_full))
    store = storage()
    middle, unfolded = [], []
    if whole:
        middle, unfolded = consistent_with_folds(
            lambda: (
                store.rollup_totals(customer=external_customer_id, windows=whole),
                store.unfolded_totals(customer=external_customer_id, windows=whole),
            )
        )
    edge_parts = iter(store.hourly_partials_many(parts=edges))
    for i, w in batched:
        meter, start, end = windows[i]
        pieces = [next(edge_parts)]  # the start edge, or the whole window
        if w is not None:
            pieces += [{0: middle[w]}, {0: unfolded[w]}, next(edge_parts)]
        total = Partial()
        for piece in pieces:  # in time order, so a LATEST tie goes to the later part
            for _, partial in sorted(piece.items(), key=lambda item: item[0]):
                total.merge(partial)
        readings[i] = Reading(quantity(meter, total, start, end), total.count)
    return [readings[i] for i in range(len(windows))]


ADDITIVE = names.ADDITIVE_AGGREGATIONS


def meter_reading_after(
    *, meter: Meter, external_customer_id: str, start: datetime, end: datetime, after_id: int
) -> tuple[int, Decimal | None]:
    """How many events of ``[start, end)`` stored after event ``after_id`` feed the meter, and
    what they add to its quantity: None where the aggregation does not add up (MAX, AVG,
    LATEST, COUNT_UNIQUE) and only a reading of everything tells."""
    total = Partial()
    selection = Selection(customer=external_customer_id, start=start, end=end, after_id=after_id)
    for partial in storage().hourly_partials(meter=meter, selection=selection).values():
        total.merge(partial)
    if total.count == 0:
        return 0, ZERO
    if meter.aggregation not in ADDITIVE:
        return total.count, None
    return total.count, quantity(meter, total, start, end)


def meter_usage(**kwargs) -> Decimal:
    """``meter_reading``'s quantity."""
    return meter_reading(**kwargs).quantity


def meter_usage_windows(
    *,
    meter: Meter,
    external_customer_id: str,
    start: datetime,
    end: datetime,
    window_size: str,
    use_rollups: bool = True,
) -> list[tuple[datetime, Decimal]]:
    """The quantity per window, for windows that hold usage, in time order."""
    windows: dict[datetime, Partial] = {}
    for moment, partial in usage_partials(
        meter=meter,
        external_customer_id=external_customer_id,
        start=start,
        end=end,
        use_rollups=use_rollups and window_size not in SUB_HOUR_WINDOWS,
        window_size=window_size,
    ):
        windows.setdefault(window_floor(moment, window_size), Partial()).merge(partial)
    return [(w, quantity(meter, p, max(w, start), end)) for w, p in sorted(windows.items())]


def unmatched_customers():
    """External customer ids that sent events but have no Customer yet, busiest first."""
    from django.db.models import Count, Max, Min

    from metering.models import Customer

    return (
        Event.objects.exclude(external_customer_id__in=Customer.objects.values("external_id"))
        .values("external_customer_id")
        .annotate(events=Count("id"), first_seen=Min("timestamp"), last_seen=Max("timestamp"))
        .order_by("-events")
    )


def api_key_by_hash(hashed: str) -> ApiKey | None:
    """The key whose secret hashes to ``hashed``: id and status only."""
    row = (
        ApiKey.objects.filter(hashed_key=hashed)
        .values_list("id", "revoked_at", "last_used_at")
        .first()
    )
    if row is None:
        return None
    return ApiKey(id=row[0], revoked_at=row[1], last_used_at=row[2])


def event_property_keys(*, events) -> list[str]:
    """Every property key of the selected events (an Event queryset), sorted."""
    return storage().property_keys(events=events)


def usage_partials_after(
    *, meter: Meter, external_customer_id: str, start: datetime, end: datetime, after_id: int
) -> dict[datetime, Partial]:
    """Partials by hour of the events of ``[start, end)`` stored after event ``after_id``:
    what a closed invoice did not read (late usage)."""
    selection = Selection(customer=external_customer_id, start=start, end=end, after_id=after_id)
    found = storage().hourly_partials(meter=meter, selection=selection)
    return {bucket: partial for (_, bucket), partial in found.items()}


# --- the operator's views of the log ----------------------------------------------------

# Aggregations whose per-day quantities add up across customers and days, so a chart can
# stack them; the others (MAX, AVG, LATEST, COUNT_UNIQUE, WEIGHTED_SUM) do not.
STACKABLE = frozenset({names.COUNT, names.SUM, names.SUM_WITH_MULTIPLIER})


def usage_by_day(*, start: datetime, end: datetime) -> list[tuple[Meter, dict[datetime, Decimal]]]:
    """Each stackable meter's quantity per UTC day over ``[start, end)``, all customers
    together, from the hourly rollups alone (never the raw log): whole hours, as folded."""
    meters = {
        m.pk: m for m in Meter.objects.filter(aggregation__in=STACKABLE).select_related("feature")
    }
    rows = (
        UsageRollup.objects.filter(meter_id__in=meters, bucket__gte=start, bucket__lt=end)
        .annotate(day=TruncDay("bucket", tzinfo=UTC))
        .values("meter_id", "day")
        .annotate(events=Sum("event_count"), total=Sum("value_sum"))
        .order_by()
    )
    days: dict[str, dict[datetime, Decimal]] = {}
    for row in rows:
        partial = Partial(count=row["events"], total=Decimal(row["total"] or 0))
        meter = meters[row["meter_id"]]
        days.setdefault(meter.pk, {})[row["day"]] = quantity(meter, partial, start, end)
    return [(meters[pk], by_day) for pk, by_day in days.items()]


@dataclass(frozen=True)
class EventFeed:
    """The features an event feeds, or why it feeds none (or why what it feeds is unbilled)."""

    features: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


UNKNOWN_CUSTOMER = "unknown customer"


def _missed_filters(meter: Meter, event: Event) -> list[str]:
    """The filters of ``meter`` the event fails, each tested by ``matches`` alone."""
    missed = []
    for item in meter.filters:
        alone = SimpleNamespace(event_name=meter.event_name, filters=[item])
        if matches(alone, event.event_name, event.properties):
            continue
        key = item["key"]
        if key not in event.properties:
            seen = "missing"
        else:
            text = property_text(event.properties[key])
            seen = "not text" if text is None else repr(text)
        missed.append(f"filter {key}={','.join(item['values'])} did not match ({seen})")
    return missed


def event_feeds(*, events: list[Event]) -> list[EventFeed]:
    """For a page of events, in two queries: the features each feeds under today's meters,
    or why none does; an unknown customer's events count once that customer exists."""
    meters = list(Meter.objects.select_related("feature").order_by("feature__name"))
    known = set(
        Customer.objects.filter(
            external_id__in={e.external_customer_id for e in events}
        ).values_list("external_id", flat=True)
    )
    feeds = []
    for event in events:
        named = [m for m in meters if m.event_name == event.event_name]
        fed = tuple(m.feature.name for m in named if matches(m, event.event_name, event.properties))
        reasons = []
        if not named:
            reasons.append(f"no meter for event name {event.event_name!r}")
        elif not fed:
            reasons += dict.fromkeys(r for m in named for r in _missed_filters(m, event))
        if event.external_customer_id not in known:
            reasons.append(UNKNOWN_CUSTOMER)
        feeds.append(EventFeed(features=fed, reasons=tuple(reasons)))
    return feeds


def events_unmetered(events):
    """The events among ``events`` (a queryset) that no meter counts today."""
    unmetered = events
    for meter in Meter.objects.all():
        unmetered = unmetered.exclude(pk__in=events_feeding(events, meter=meter).values("pk"))
    return unmetered


def events_of_unknown_customers(events):
    """The events among ``events`` whose external customer id no customer has yet."""
    return events.exclude(external_customer_id__in=Customer.objects.values("external_id"))
