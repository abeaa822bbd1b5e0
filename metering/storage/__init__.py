"""Metering's storage layer: ``storage()`` is the implementation for the current connection.

Only this package knows which database it runs on; see ``base.EventStore``.
"""

from django.db import connection

from metering.storage.base import EventStore, Selection, hour_of
from metering.storage.portable import PortableStore
from metering.storage.postgres import PostgresStore

_STORES: dict[str, EventStore] = {"postgresql": PostgresStore()}
_PORTABLE = PortableStore()


def storage() -> EventStore:
    """The store for the default connection's database."""
    return _STORES.get(connection.vendor, _PORTABLE)


__all__ = ["EventStore", "PortableStore", "PostgresStore", "Selection", "hour_of", "storage"]
