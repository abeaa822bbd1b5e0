from celery import shared_task
from django.core.cache import cache

from metering.rollups import (
    FOLD_FLAG,
    SETTLE_SECONDS,
    meter_rollups_rebuild,
    rollups_fold,
    stale_meters,
)


@shared_task
def rollups_fold_task() -> int:
    """Fold unfolded events into the rollups. Clears the coalescing flag first, so events
    committed while this runs ask for another fold."""
    cache.delete(FOLD_FLAG)
    return rollups_fold()


@shared_task
def rollups_refresh(settle_seconds: float = SETTLE_SECONDS) -> int:
    """Rebuild the rollups of every meter created or changed since they were built, once it
    has not changed for ``settle_seconds``."""
    meters = list(stale_meters(settle_seconds=settle_seconds))
    for meter in meters:
        meter_rollups_rebuild(meter=meter)
    return len(meters)
