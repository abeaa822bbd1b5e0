from celery import shared_task

from metering.ingestion import meter_rollups_rebuild, stale_meters


@shared_task
def rollups_refresh() -> int:
    """Rebuild the rollups of every meter created or changed since they were built."""
    meters = list(stale_meters())
    for meter in meters:
        meter_rollups_rebuild(meter=meter)
    return len(meters)
