"""Issue 10: sign-in lockout on the admin and the portal, and a request rate per API key."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import override_settings
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(o1_subscriptions):
    return o1_subscriptions


@pytest.fixture
def admin_user():
    return User.objects.create_superuser("boss", "boss@example.com", "right-password-1")


def _fail(client, url, username, times):
    return [
        client.post(url, {"username": username, "password": "wrong"}).status_code
        for _ in range(times)
    ]


def test_the_portal_locks_an_email_out_after_ten_wrong_passwords(client, demo):
    url = reverse("portal:login")
    assert _fail(client, url, "acme@example.com", 9) == [200] * 9
    tenth = client.post(url, {"username": "ACME@example.com", "password": "wrong"})
    assert tenth.status_code == 429
    assert "Too many sign-in attempts" in tenth.content.decode()
    right = client.post(url, {"username": "acme@example.com", "password": "acme-demo"})
    assert right.status_code == 429  # locked even with the right password
    other = client.post(url, {"username": "globex@example.com", "password": "globex-demo"})
    assert other.status_code == 302  # another account from the same address is not


def test_the_admin_locks_a_username_out_after_ten_wrong_passwords(client, admin_user):
    url = reverse("admin:login")
    assert _fail(client, url, "boss", 9) == [200] * 9
    assert _fail(client, url, "boss", 1) == [429]
    right = client.post(url, {"username": "boss", "password": "right-password-1"})
    assert right.status_code == 429


def test_a_successful_sign_in_resets_the_count(client, demo):
    url = reverse("portal:login")
    _fail(client, url, "acme@example.com", 9)
    ok = client.post(url, {"username": "acme@example.com", "password": "acme-demo"})
    assert ok.status_code == 302
    client.logout()
    assert _fail(client, url, "acme@example.com", 9) == [200] * 9


@override_settings(AXES_FAILURE_LIMIT=3)
def test_the_failure_limit_is_a_setting(client, admin_user):
    assert _fail(client, reverse("admin:login"), "boss", 3) == [200, 200, 429]


def test_the_lockout_lifts_after_the_cool_off(client, admin_user, settings):
    import time_machine
    from django.utils import timezone

    url = reverse("admin:login")
    _fail(client, url, "boss", 10)
    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME, tick=False):
        right = client.post(url, {"username": "boss", "password": "right-password-1"})
    assert right.status_code == 302


def test_test_client_login_still_works(client, demo):
    assert client.login(username="acme@example.com", password="acme-demo")


# API rate per key.


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    from metering.services import api_key_create

    _, raw = api_key_create(name="rate")
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


@override_settings(TALLY_API_RATE="3/min")
def test_an_api_key_beyond_its_rate_gets_a_429_with_retry_after(api_client):
    # One minute's window, however slow the machine: at its edge a fourth request would
    # open the next one.
    with time_machine.travel(datetime(2026, 11, 28, 12, 0, 30, tzinfo=UTC), tick=False):
        assert [api_client.get("/v1/customers").status_code for _ in range(3)] == [200] * 3
        response = api_client.get("/v1/customers")
    assert response.status_code == 429
    body = response.json()
    assert body["error"]["code"] == "too_many_requests" and body["http_status_code"] == 429
    assert 0 < int(response["Retry-After"]) <= 60


@override_settings(TALLY_API_RATE="3/min")
def test_the_rate_is_per_key(api_client):
    from rest_framework.test import APIClient

    from metering.services import api_key_create

    for _ in range(3):
        api_client.get("/v1/customers")
    _, raw = api_key_create(name="other")
    other = APIClient()
    other.credentials(HTTP_X_API_KEY=raw)
    assert other.get("/v1/customers").status_code == 200


@override_settings(TALLY_API_RATE="off")
def test_the_rate_can_be_turned_off(api_client):
    assert all(api_client.get("/v1/customers").status_code == 200 for _ in range(5))


@pytest.mark.parametrize("rate, parsed", [("100000/min", (100000, 60)), ("5/s", (5, 1))])
def test_rates_parse(rate, parsed):
    from config.security import parse_rate

    assert parse_rate(rate) == parsed
    assert parse_rate("off") is None
