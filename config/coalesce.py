"""Asking for background work less often than every commit."""

import threading
import time


class RecentlyQueued:
    """Keys this process queued a task for within the last ``seconds``.

    A task queued with a countdown of at least ``seconds`` reads everything committed before
    it starts, so within that window this process need not ask again, nor pay the round
    trips of asking. Off when Celery runs tasks inline, where nothing waits for a countdown.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._asked: dict = {}
        self._lock = threading.Lock()

    def __contains__(self, key) -> bool:
        from config.celery import app

        if app.conf.task_always_eager:
            return False
        return time.monotonic() - self._asked.get(key, -self.seconds) < self.seconds

    def add(self, key) -> None:
        """Call before queueing the task, so the window ends before its countdown does."""
        with self._lock:
            now = time.monotonic()
            if len(self._asked) > 10_000:
                self._asked = {k: t for k, t in self._asked.items() if now - t < self.seconds}
            self._asked[key] = now
