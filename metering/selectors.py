"""Usage reads. Whole hours come from the rollups plus the rows not folded into them yet;
only the partial hours at the edges of a window read raw events, so cost does not grow
with the number of events."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import connection, transaction

from catalog.models import Meter
from metering.aggregation import ZERO, Partial, quantity
from metering.models import ApiKey, Event, UsageDistinct, UsageRollup
from metering.rollups import (
    Selection,
    fold_lock,
    fold_version,
    hour_of,
    hourly_partials,
    raw_partials,
    rollups_ready,
    unfolded_partials,
)

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
    for _ in range(READ_ATTEMPTS):
        version = fold_version()
        result = read()
        if fold_version() == version:
            return result
    with transaction.atomic():
        fold_lock()  # folds wait for this read
        return read()


def _edges(meter, customer: str, start: datetime, end: datetime) -> dict:
    """Raw events of ``[start, end)`` by hour: a window's partial edge hours."""
    selection = Selection(customer=customer, start=start, end=end)
    return {bucket: p for (_, bucket), p in hourly_partials(meter, selection).items()}


def _unfolded(meter, customer: str, start: datetime, end: datetime) -> dict:
    """What the rollups of ``[start, end)`` do not hold yet, by hour."""
    return unfolded_partials(
        lambda row: hour_of(row.timestamp),
        meter=meter,
        external_customer_id=customer,
        timestamp__gte=start,
        timestamp__lt=end,
    )


def _rollup_total(meter, customer: str, start: datetime, end: datetime) -> Partial:
    """All whole hours as one partial, summed in the database."""
    from django.db.models import Max, Sum

    rollups = UsageRollup.objects.filter(
        meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
    )
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
    if meter.aggregation == "COUNT_UNIQUE":
        partial.distinct = set(
            UsageDistinct.objects.filter(
                meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
            )
            .values_list("value", flat=True)
            .distinct()
        )
    return partial


TRUNCATED_WINDOWS = {"DAY": "day", "WEEK": "week", "MONTH": "month"}


def _rollup_windows(meter, customer: str, start: datetime, end: datetime, size: str) -> dict:
    """Whole hours summed per day, week or month in the database (not for LATEST or
    COUNT_UNIQUE, which need the hours themselves)."""
    from django.db.models import Max, Sum
    from django.db.models.functions import Trunc

    rows = (
        UsageRollup.objects.filter(
            meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
        )
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


def _rollup_partials(meter, customer: str, start: datetime, end: datetime) -> dict:
    partials: dict[datetime, Partial] = {}
    rows = UsageRollup.objects.filter(
        meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
    ).values_list(
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
    if meter.aggregation == "COUNT_UNIQUE":
        distinct = UsageDistinct.objects.filter(
            meter=meter, external_customer_id=customer, bucket__gte=start, bucket__lt=end
        ).values_list("bucket", "value")
        for bucket, value in distinct:
            partials.setdefault(bucket, Partial()).distinct.add(value)
    return partials


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
        found = raw_partials(meter, selection, lambda _, moment: moment)
        return sorted(found.items(), key=lambda item: item[0])
    first_full = hour_of(start) if hour_of(start) == start else hour_of(start) + HOUR
    last_full = hour_of(end)
    if first_full >= last_full:
        return sorted(_edges(meter, external_customer_id, start, end).items())
    whole = (first_full, last_full)

    def read_whole_hours():
        if window_size in TRUNCATED_WINDOWS and meter.aggregation not in ("LATEST", "COUNT_UNIQUE"):
            middle = _rollup_windows(meter, external_customer_id, *whole, window_size)
        elif by_hour:
            middle = _rollup_partials(meter, external_customer_id, *whole)
        else:
            middle = {first_full: _rollup_total(meter, external_customer_id, *whole)}
        return middle, _unfolded(meter, external_customer_id, *whole)

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


ADDITIVE = {"COUNT", "SUM", "SUM_WITH_MULTIPLIER", "WEIGHTED_SUM"}


def meter_reading_after(
    *, meter: Meter, external_customer_id: str, start: datetime, end: datetime, after_id: int
) -> tuple[int, Decimal | None]:
    """How many events of ``[start, end)`` stored after event ``after_id`` feed the meter, and
    what they add to its quantity: None where the aggregation does not add up (MAX, AVG,
    LATEST, COUNT_UNIQUE) and only a reading of everything tells."""
    total = Partial()
    selection = Selection(customer=external_customer_id, start=start, end=end, after_id=after_id)
    for partial in hourly_partials(meter, selection).values():
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
    """The key whose secret hashes to ``hashed``: id and status only, in plain SQL."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, revoked_at, last_used_at FROM {ApiKey._meta.db_table} "
            "WHERE hashed_key = %s",
            [hashed],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    return ApiKey(id=row[0], revoked_at=_aware(row[1]), last_used_at=_aware(row[2]))


def _aware(value):
    """A timestamp from a raw query: SQLite hands back naive text or datetimes."""
    from django.utils.dateparse import parse_datetime

    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
