"""The coalescing protocol, step by step, as two web processes and a worker interleave.

Each ``Coalescer`` instance plays one process (its own memory); they share the store that
settings choose: Redis under CI, the in-process store otherwise.
"""

import time
import uuid

import pytest

from config import coalesce
from config.celery import app


@pytest.fixture
def queued():
    return []


@pytest.fixture
def not_eager():
    """Tasks queued for a worker, as in production: the process-local memo is on."""
    before = app.conf.task_always_eager
    app.conf.task_always_eager = False
    yield
    app.conf.task_always_eager = before


def processes(queued, count=2, countdown=2.0):
    name = f"test-{uuid.uuid4().hex[:8]}"
    return [
        coalesce.Coalescer(name, countdown=countdown, queue=queued.append) for _ in range(count)
    ]


def test_a_burst_queues_one_task(queued, not_eager):
    a, b = processes(queued)
    assert a.request("sub_1")
    for _ in range(5):
        a.request("sub_1")
        b.request("sub_1")
    assert queued == ["sub_1"]


def test_a_request_after_the_task_started_queues_again(queued, not_eager):
    """Issue 9 item 3: B saw A's task queued, then that task started; B's next commit must
    not be swallowed by anything B remembered."""
    a, b = processes(queued)
    assert a.request("fold")
    assert not b.request("fold")  # A's task is queued and will read B's commit
    with a.running("fold"):  # the task starts: it reads what was committed before here
        assert b.request("fold")  # committed after the read began: a new run
    assert queued == ["fold", "fold"]
    assert a.pending() == ["fold"]  # the second run is still owed


def test_a_process_skips_asking_only_within_half_its_own_countdown(queued, not_eager):
    (a,) = processes(queued, count=1, countdown=0.2)
    assert a.request("k")
    assert not a.request("k")  # its own task, queued 0.2 s ahead, has not started
    time.sleep(0.11)
    with a.running("k"):
        pass
    assert a.request("k")  # past half the countdown it asks the store again


def test_the_task_clears_the_pending_mark_unless_a_request_came_meanwhile(queued):
    a, b = processes(queued)
    a.request("sub_1")
    with a.running("sub_1"):
        pass
    assert a.pending() == []
    a.request("sub_1")
    with a.running("sub_1"):
        b.request("sub_1")
    assert a.pending() == ["sub_1"]


def test_a_failed_run_stays_pending(queued):
    (a,) = processes(queued, count=1)
    a.request("sub_1")
    with pytest.raises(RuntimeError), a.running("sub_1"):
        raise RuntimeError("worker crashed mid-task")
    assert a.pending() == ["sub_1"]


def test_sweep_replaces_a_task_lost_with_its_worker(queued, not_eager):
    """Issue 9 item 2: the queued task died with its worker; its flag still stands."""
    a, b = processes(queued)
    a.request("sub_1")
    assert not b.request("sub_1")  # the lost task's flag swallows this request...
    assert b.sweep() == 1  # ...but the key is still pending, so a starting worker requeues
    assert queued == ["sub_1", "sub_1"]
    with b.running("sub_1"):  # the new run clears the stale flag as it starts
        pass
    assert a.pending() == []


def test_a_lost_tasks_flag_expires_so_new_requests_queue(queued, not_eager, monkeypatch):
    monkeypatch.setattr(coalesce, "FLAG_GRACE", 0.2)
    a, b = processes(queued, countdown=0.1)
    a.request("sub_1")  # and the worker holding it is killed
    assert not b.request("sub_1")
    time.sleep(0.4)
    assert b.request("sub_1")
    assert queued == ["sub_1", "sub_1"]


def test_the_store_matches_the_cache(settings):
    """Under CI the cache is Redis, which web processes and workers share."""
    store = coalesce._store()
    redis = "redis" in settings.CACHES["default"]["BACKEND"].lower()
    assert isinstance(store, coalesce._RedisStore if redis else coalesce._LocalStore)


def test_a_slow_task_never_clears_a_newer_request(queued):
    """The pending mark is a fresh number each time: after other runs cleared it and new
    requests marked it again, a run that began long before must leave it."""
    a, b = processes(queued)
    a.request("sub_1")
    with a.running("sub_1"):  # a slow run
        with b.running("sub_1"):  # a duplicate run clears the mark
            pass
        a.request("sub_1")  # a new request: its task may yet be lost
    assert a.pending() == ["sub_1"]
