import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def load_scenario(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def o1_scenario() -> dict:
    return load_scenario("openai_o1.json")


@pytest.fixture(autouse=True)
def eager_celery(request):
    """Unit tests run tasks in-process; integration tests use a real worker instead."""
    if request.node.get_closest_marker("integration"):
        yield
        return
    from config.celery import app

    previous = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def fresh_process_caches():
    """Each test starts as a fresh process would: no meters or API keys remembered from
    another test's (rolled back) data."""
    from metering.auth import api_keys_forget
    from metering.ingestion import meters_forget

    meters_forget()
    api_keys_forget()
