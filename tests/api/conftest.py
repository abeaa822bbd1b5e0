import pytest
from rest_framework.test import APIClient

from metering.services import api_key_create


@pytest.fixture
def api_key(db) -> str:
    _, raw = api_key_create(name="tests")
    return raw


@pytest.fixture
def api_client(api_key) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key)
    return client
