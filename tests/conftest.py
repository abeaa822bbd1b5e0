import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def load_scenario(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def o1_scenario() -> dict:
    return load_scenario("openai_o1.json")
