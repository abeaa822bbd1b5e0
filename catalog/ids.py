"""Opaque, time-sortable string ids such as ``feat_01JC3...`` (a ULID behind a prefix)."""

import os
import time

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def id_factory(prefix: str):
    """A named default for a model field, so migrations can serialize it."""
    return _IdFactory(prefix)


class _IdFactory:
    def __init__(self, prefix: str):
        self.prefix = prefix

    def __call__(self) -> str:
        return new_id(self.prefix)

    def deconstruct(self):
        return ("catalog.ids.id_factory", (self.prefix,), {})
