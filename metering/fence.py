"""The fence between ingest and closing a customer's period.

Every ingest transaction holds a shared lock on its customers' slots until it commits;
``usage_fence_take`` takes a customer's slot exclusively, so it waits for that customer's
ingest in flight, and ingest that comes later waits for the closing transaction to commit.
Under that lock the highest event id is the fence: each event of the customer with an id up
to it is committed and read; each one stored later gets a higher id, because the events' id
sequence hands ids out in order across connections (it must not be cached per session).
The locks are the storage layer's (``EventStore.ingest_fence_share``, ``usage_fence_lock``).
"""

import zlib

from metering.storage import storage

SLOTS = 128  # customers share slots, so ingest takes at most this many locks


def _slot(external_customer_id: str) -> int:
    return zlib.crc32(external_customer_id.encode()) % SLOTS


def ingest_fence_share(*, external_customer_ids) -> None:
    """In ingest's transaction, before it stores events for these customers."""
    storage().ingest_fence_share(slots=sorted({_slot(c) for c in external_customer_ids}))


def usage_fence_peek() -> int:
    """The highest event id now: a reader that takes it first saw nothing above it."""
    return storage().usage_fence_peek()


def usage_fence_take(*, external_customer_id: str) -> int:
    """In a transaction that reads a customer's usage to close it: from here to its commit,
    no event of the customer commits; returns the fence."""
    store = storage()
    store.usage_fence_lock(slot=_slot(external_customer_id))
    return store.usage_fence_peek()
