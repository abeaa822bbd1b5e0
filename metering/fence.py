"""The fence between ingest and closing a customer's period.

Every ingest transaction holds a shared lock on its customers' slots until it commits;
``usage_fence_take`` takes a customer's slot exclusively, so it waits for that customer's
ingest in flight, and ingest that comes later waits for the closing transaction to commit.
Under that lock the highest event id is the fence: each event of the customer with an id up
to it is committed and read; each one stored later gets a higher id, because the events' id
sequence hands ids out in order across connections (it must not be cached per session).
"""

import zlib

from django.db import connection

from metering.models import Event

LOCK_SPACE = 7_150_917  # the first key of Tally's two-key advisory locks
SLOTS = 128  # customers share slots, so ingest takes at most this many locks


def _slot(external_customer_id: str) -> int:
    return zlib.crc32(external_customer_id.encode()) % SLOTS


def ingest_fence_share(*, external_customer_ids) -> None:
    """In ingest's transaction, before it stores events for these customers."""
    if connection.vendor != "postgresql":
        return  # SQLite lets one transaction write at a time
    slots = sorted({_slot(c) for c in external_customer_ids})
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_advisory_xact_lock_shared(%s, s)) FROM unnest(%s::int[]) AS s",
            [LOCK_SPACE, slots],
        )


def usage_fence_peek() -> int:
    """The highest event id now: a reader that takes it first saw nothing above it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max(id) FROM {Event._meta.db_table}")
        (highest,) = cursor.fetchone()
    return highest or 0


def usage_fence_take(*, external_customer_id: str) -> int:
    """In a transaction that reads a customer's usage to close it: from here to its commit,
    no event of the customer commits; returns the fence."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [LOCK_SPACE, _slot(external_customer_id)]
            )
    else:
        from metering.rollups import fold_lock

        fold_lock()  # a write: it holds SQLite's write lock until the commit
    return usage_fence_peek()
