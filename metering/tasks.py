"""Metering's Celery tasks, and the coalesced requests that queue the fold."""

from celery import shared_task

from config.coalesce import Coalescer
from metering.rollups import (
    FOLD_CHUNK,
    FOLD_ROUNDS,
    SETTLE_SECONDS,
    meter_rollups_rebuild,
    rollups_fold,
    stale_meters,
)

FOLD_DELAY_SECONDS = 2.0


def _queue_fold(key: str) -> None:
    rollups_fold_task.apply_async(countdown=FOLD_DELAY_SECONDS)


fold_requests = Coalescer("fold", countdown=FOLD_DELAY_SECONDS, queue=_queue_fold)


def rollups_fold_request() -> None:
    """Ask for a fold that reads every row committed before this call."""
    fold_requests.request("fold")


def rollups_fold_all() -> int:
    """The fold task's body: fold what there is, and ask again if a run's rounds ran out."""
    with fold_requests.running("fold"):
        folded = rollups_fold()
        if folded >= FOLD_CHUNK * FOLD_ROUNDS:
            rollups_fold_request()
    return folded


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
