from celery import shared_task

from metering.rollups import SETTLE_SECONDS, meter_rollups_rebuild, rollups_fold_all, stale_meters


@shared_task
def rollups_fold_task() -> int:
    """Fold unfolded events into the rollups (also beat's, every few seconds)."""
    return rollups_fold_all()


@shared_task
def rollups_refresh(settle_seconds: float = SETTLE_SECONDS) -> int:
    """Rebuild the rollups of every meter created or changed since they were built, once it
    has not changed for ``settle_seconds``."""
    meters = list(stale_meters(settle_seconds=settle_seconds))
    for meter in meters:
        meter_rollups_rebuild(meter=meter)
    return len(meters)
