"""Asking for background work less often than every commit, without ever losing a request.

A ``Coalescer`` queues a Celery task per key (a subscription's recompute, the fold). Each
request marks its key *pending* and queues the task unless one is already queued and not
started: a *flag* that the task clears the moment it starts, so a request that sees the
flag is read by that task. The flag expires after ``countdown + FLAG_GRACE`` seconds, so a
task lost with a killed worker blocks nobody for long. The task clears the pending mark
when it ends, unless a request came while it ran; ``sweep()`` queues a task for every key
still pending, which a starting worker does, so a task lost with the old worker is replaced
at once.

Redis holds flags and pending marks when the cache is Redis (web and workers share it);
otherwise a process-local store does, for tasks that run in-process.
"""

import itertools
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

from django.conf import settings
from django.core.cache import cache

FLAG_GRACE = 2.0

# KEYS: pending hash, flag, sequence. ARGV: member, flag time-to-live in ms. 1: the caller
# queues. Each mark is a new number, so a task that saw an older one never clears a newer.
_REQUEST = """
redis.call('HSET', KEYS[1], ARGV[1], redis.call('INCR', KEYS[3]))
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
# KEYS: pending hash, flag. ARGV: member. The mark as the task starts.
_START = """
redis.call('DEL', KEYS[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""
# KEYS: pending hash. ARGV: member, the mark seen at start ('' for none).
_FINISH = """
local now = redis.call('HGET', KEYS[1], ARGV[1])
if now and now == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
"""


class _RedisStore:
    def __init__(self):
        client = cache._cache.get_client(write=True)  # the cache's own connection pool
        self.client = client
        self.request = client.register_script(_REQUEST)
        self.start = client.register_script(_START)
        self.finish = client.register_script(_FINISH)

    def mark(self, pending: str, flag: str, member: str, ttl: float) -> bool:
        keys = [pending, flag, f"{pending}:sequence"]
        return bool(self.request(keys=keys, args=[member, int(ttl * 1000)]))

    def begin(self, pending: str, flag: str, member: str) -> str:
        seen = self.start(keys=[pending, flag], args=[member])
        return seen.decode() if seen is not None else ""

    def end(self, pending: str, member: str, seen: str) -> None:
        self.finish(keys=[pending], args=[member, seen])

    def members(self, pending: str) -> list[str]:
        return [m.decode() for m in self.client.hkeys(pending)]


class _LocalStore:
    """The same protocol in one process, for tasks that run in-process."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[str, dict[str, int]] = {}
        self.flags: dict[str, float] = {}
        self.sequence = itertools.count(1)

    def mark(self, pending: str, flag: str, member: str, ttl: float) -> bool:
        with self.lock:
            self.pending.setdefault(pending, {})[member] = next(self.sequence)
            now = time.monotonic()
            if self.flags.get(flag, 0) > now:
                return False
            self.flags[flag] = now + ttl
            return True

    def begin(self, pending: str, flag: str, member: str) -> str:
        with self.lock:
            self.flags.pop(flag, None)
            seen = self.pending.get(pending, {}).get(member)
            return "" if seen is None else str(seen)

    def end(self, pending: str, member: str, seen: str) -> None:
        with self.lock:
            marks = self.pending.get(pending, {})
            if member in marks and str(marks[member]) == seen:
                del marks[member]

    def members(self, pending: str) -> list[str]:
        with self.lock:
            return list(self.pending.get(pending, {}))


_stores: dict[str, object] = {}


def _store():
    kind = "redis" if "redis" in settings.CACHES["default"]["BACKEND"].lower() else "local"
    if kind not in _stores:
        _stores[kind] = _RedisStore() if kind == "redis" else _LocalStore()
    return _stores[kind]


class Coalescer:
    """Requests for a task per key: a burst costs one task, and no request is lost.

    ``queue(key)`` queues the task with a countdown of ``countdown`` seconds; the task's
    body runs inside ``running(key)``.
    """

    def __init__(self, name: str, *, countdown: float, queue: Callable[[str], None]):
        self.name, self.countdown, self.queue = name, countdown, queue
        self.pending_key = f"tally:{name}:pending"
        self._queued_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def _flag(self, key: str) -> str:
        return f"tally:{self.name}:queued:{key}"

    def request(self, key: str) -> bool:
        """Ask for a run that reads everything committed before this call. True if this
        call queued the task."""
        if self._recently_queued(key):
            return False
        store = _store()
        if not store.mark(self.pending_key, self._flag(key), key, self.countdown + FLAG_GRACE):
            return False
        with self._lock:
            if len(self._queued_at) > 10_000:
                self._queued_at.clear()
            self._queued_at[key] = time.monotonic()
        self.queue(key)
        return True

    def _recently_queued(self, key: str) -> bool:
        """This process queued the key's task less than half its countdown ago: that task
        has not started (even with clocks a little apart), so it reads this request's commit.
        Off when tasks run in-process, where nothing waits for a countdown."""
        from config.celery import app

        if app.conf.task_always_eager:
            return False
        queued_at = self._queued_at.get(key)
        return queued_at is not None and time.monotonic() - queued_at < self.countdown / 2

    @contextmanager
    def running(self, key: str):
        """Around the task's work: requests from here on queue a new run; the key stays
        pending if the work fails or a request came meanwhile."""
        store = _store()
        seen = store.begin(self.pending_key, self._flag(key), key)
        yield
        store.end(self.pending_key, key, seen)

    def pending(self) -> list[str]:
        return _store().members(self.pending_key)

    def sweep(self) -> int:
        """Queue a run for every pending key, flag or not: a task lost with a worker left
        its key pending (and maybe flagged); the new run clears both."""
        keys = self.pending()
        for key in keys:
            self.queue(key)
        return len(keys)
