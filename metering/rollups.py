"""Hourly rollups per meter and customer, folded in by a worker after ingest commits.

Ingest stores each new event, and in the same transaction one UnfoldedUsage row for each
meter it feeds: the value it already parsed. It never waits on rollup rows. ``rollups_fold``
moves a chunk of those rows into UsageRollup and UsageDistinct (``EventStore.fold_chunk``:
one statement on PostgreSQL, one transaction on SQLite). Usage reads add the unfolded rows,
so they are exact however far folding lags, and check FoldState.version so that they never
straddle a fold. The SQL is ``metering.storage``'s; the task and its coalesced requests are
``metering.tasks``'.
"""

from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from catalog.models import Meter
from metering.models import MeterRollupState
from metering.storage import Selection, hour_of, storage

__all__ = ["Selection", "hour_of"]

FOLD_CHUNK = 50_000
FOLD_ROUNDS = 20  # chunks per task run; the next run or beat takes the rest


def fold_lock() -> None:
    """Serialise folds and rebuilds (``EventStore.fold_lock``)."""
    storage().fold_lock()


def fold_version() -> int:
    return storage().fold_version()


def rollups_fold(*, limit: int = FOLD_CHUNK, rounds: int = FOLD_ROUNDS) -> int:
    """Fold unfolded usage into the rollups, oldest first, a chunk per transaction.
    Returns how many (event, meter) rows were folded."""
    folded = 0
    for _ in range(rounds):
        with transaction.atomic():
            store = storage()
            store.fold_lock()
            moved = store.fold_chunk(limit=limit)
            if moved:
                store.fold_version_bump()
        folded += moved
        if moved < limit:
            break
    return folded


@transaction.atomic
def meter_rollups_rebuild(*, meter: Meter) -> int:
    """Recompute one meter's rollups from every event, after the meter is created or
    changed, dropping its unfolded rows (made under the old definition) in the same
    snapshot. Returns how many events feed it."""
    store = storage()
    store.fold_lock()
    MeterRollupState.objects.update_or_create(meter=meter, defaults={"built_at": timezone.now()})
    count = store.meter_rebuild(meter=meter)
    store.fold_version_bump()
    return int(count)


# A meter changed this recently may still have requests in flight that parsed events with
# its old definition (web processes recheck meters every second); its rebuild waits, so that
# their unfolded rows come before the rebuild drops them. Until then usage reads raw events.
SETTLE_SECONDS = 10


def stale_meters(*, settle_seconds: float = SETTLE_SECONDS):
    """Meters changed since their rollups were last built, or never built, and not changed
    in the last ``settle_seconds``."""
    changed = Meter.objects.filter(
        Q(rollup_state__isnull=True) | Q(rollup_state__built_at__lt=F("updated_at"))
    )
    return changed.filter(updated_at__lte=timezone.now() - timedelta(seconds=settle_seconds))


def rollups_ready(meter) -> bool:
    if meter.pk is None:
        return False
    built = MeterRollupState.objects.filter(meter_id=meter.pk).values_list("built_at", flat=True)
    built_at = built.first()
    return built_at is not None and built_at >= meter.updated_at


def rollups_ready_among(meters) -> set:
    """The pks of ``meters`` whose rollups can be read (``rollups_ready``), in one query."""
    by_pk = {m.pk: m for m in meters if m.pk is not None}
    built = MeterRollupState.objects.filter(meter_id__in=list(by_pk)).values_list(
        "meter_id", "built_at"
    )
    return {pk for pk, at in built if at is not None and at >= by_pk[pk].updated_at}
