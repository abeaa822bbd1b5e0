"""``/v1/docs/`` opens with a guide whose curl commands really work, and the ingestion
endpoints carry examples that the endpoints accept as they are."""

import json
import re
import shlex
from datetime import datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from catalog.models import Feature
from metering.models import Event
from tests.factories import CustomerFactory, MeterFactory

GUIDE = settings.SPECTACULAR_SETTINGS["DESCRIPTION"]


def guide_curls() -> list[dict]:
    """Each curl of the guide's ``sh`` blocks: method, path, headers and body."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", GUIDE, re.S):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command)
            if not words or words[0] != "curl":
                continue
            curl = {"method": "GET", "headers": {}, "body": None}
            rest = iter(words[1:])
            for word in rest:
                if word == "-X":
                    curl["method"] = next(rest)
                elif word == "-H":
                    name, value = next(rest).split(": ", 1)
                    curl["headers"][name.lower()] = value
                elif word == "-d":
                    curl["body"] = next(rest)
                else:
                    assert word.startswith("$BASE/"), f"an unknown curl argument: {word}"
                    curl["path"] = word.removeprefix("$BASE")
            commands.append(curl)
    return commands


def send(client, curl: dict, variables: dict):
    def filled(text: str) -> str:
        for name, value in variables.items():
            text = text.replace(f"${name}", value)
        return text

    extra = {f"HTTP_{k.upper().replace('-', '_')}": filled(v) for k, v in curl["headers"].items()}
    extra.pop("HTTP_CONTENT_TYPE", None)
    body = filled(curl["body"]) if curl["body"] is not None else None
    if body is not None:
        json.loads(body)  # the guide's bodies are JSON as written
    return client.generic(
        curl["method"], filled(curl["path"]), body or "", "application/json", **extra
    )


def test_the_guide_covers_auth_events_usage_preview_and_alerts():
    paths = [(c["method"], c["path"]) for c in guide_curls()]
    assert paths == [
        ("POST", "/v1/events"),
        ("POST", "/v1/events/bulk"),
        ("POST", "/v1/events/usage"),
        ("GET", "/v1/customers/external/acme/subscriptions"),
        ("POST", "/v1/invoices/preview"),
        ("POST", "/v1/alerts/setting"),
        ("POST", "/v1/alerts/search"),
        ("POST", "/v1/entitlements"),
        ("GET", "/v1/customers/usage?customer_lookup_key=acme&feature_lookup_keys=o1-input"),
    ]
    assert all(c["headers"]["x-api-key"] == "$KEY" for c in guide_curls())
    assert "python manage.py create_api_key my-product" in GUIDE


@pytest.fixture
def inside_the_guides_window():
    """The clock two weeks into the guide's usage window, so "now" falls inside it for years."""
    usage = next(c for c in guide_curls() if c["path"] == "/v1/events/usage")
    start = datetime.fromisoformat(json.loads(usage["body"])["start_time"])
    with time_machine.travel(start + timedelta(days=14)):
        yield


@pytest.mark.django_db
def test_the_guides_curls_work_against_the_demo(
    inside_the_guides_window, o1_subscriptions, django_capture_on_commit_callbacks
):
    out = StringIO()
    call_command("create_api_key", "my-product", stdout=out)  # as the guide says
    variables = {
        "KEY": out.getvalue().splitlines()[-1],
        "PLAN_ID": o1_subscriptions["acme"].plan_id,
        "FEATURE_ID": Feature.objects.get(lookup_key="o1-input").pk,
    }
    client = APIClient()
    answers = []
    for curl in guide_curls():
        if "$SUBSCRIPTION_ID" in (curl["body"] or "") and "SUBSCRIPTION_ID" not in variables:
            variables["SUBSCRIPTION_ID"] = answers[-1].json()["items"][0]["id"]
        with django_capture_on_commit_callbacks(execute=True):  # as if each request committed
            answer = send(client, curl, variables)
        assert 200 <= answer.status_code < 300, (curl["path"], answer.content)
        answers.append(answer)

    event, bulk, usage, _, preview, alert, logs, entitlement, check = (a.json() for a in answers)
    assert event == {"message": "Event accepted for processing", "event_id": "req-123"}
    assert (bulk["accepted"], bulk["duplicates"]) == ("2", "0")
    stored = Event.objects.filter(event_id__in=["req-123", "req-124", "req-125"])
    assert stored.count() == 3
    assert usage["value"] != "0" and usage["results"]  # the guide's window holds them
    assert preview["subscription_id"] == o1_subscriptions["acme"].pk
    assert preview["line_items"]
    assert (alert["entity_id"], alert["config"]["critical"]["condition"]) == (
        o1_subscriptions["acme"].pk,
        "above",
    )
    # The guide's events started a package of each token type: acme's draft is $285.00, past
    # $250, so the new rule's first evaluation logged its critical level.
    assert [(log["alert_status"], log["alert_info"]["value_at_time"]) for log in logs["items"]] == [
        ("in_alarm", "285")
    ]
    assert entitlement["usage_limit"] == 10_000_000
    (feature,) = check["features"]
    # The demo's 5,000,000 input tokens and the guide's 1,200.
    assert (feature["current_usage"], feature["remaining"]) == ("5001200", "4998800")
    assert feature["allowed"]


@pytest.mark.django_db
def test_the_guides_curls_need_the_key(o1_subscriptions):
    answer = send(APIClient(), guide_curls()[0], {"KEY": "not-a-key"})
    assert answer.status_code == 401


@pytest.mark.django_db
def test_the_docs_page_opens_with_the_guide(client):
    assert client.get("/v1/docs/").status_code == 200
    schema = client.get("/v1/schema/", HTTP_ACCEPT="application/json").json()
    assert schema["info"]["description"] == GUIDE


# The ingestion endpoints' examples, sent as they are.

INGESTION = ["/v1/events", "/v1/events/bulk", "/v1/events/batch"]


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def examples(schema, path: str) -> tuple[str, dict, dict]:
    operation = schema["paths"][path]["post"]
    requests = operation["requestBody"]["content"]["application/json"]["examples"]
    success = next(s for s in operation["responses"] if s.startswith("2"))
    answers = operation["responses"][success]["content"]["application/json"]["examples"]
    return success, requests, answers


@pytest.mark.parametrize("path", INGESTION)
def test_ingestion_examples_are_in_the_schema(schema, path):
    success, requests, answers = examples(schema, path)
    assert success == ("200" if path.endswith("batch") else "202")
    assert requests and answers


@pytest.fixture
def llm_catalog(db):
    """The catalog and customer the schema's own examples define (catalog/api.py)."""
    MeterFactory(
        feature__name="LLM tokens",
        feature__lookup_key="llm_tokens",
        event_name="llm.tokens",
        field="tokens",
        filters=[{"key": "model", "values": ["gpt-4o", "gpt-4o-mini"]}],
    )
    CustomerFactory(external_id="user_42")


@pytest.mark.parametrize("path", INGESTION)
def test_ingestion_examples_are_accepted_by_the_endpoint(schema, path, api_client, llm_catalog):
    success, requests, answers = examples(schema, path)
    keys = {key for answer in answers.values() for key in answer["value"]}
    for name, example in requests.items():
        Event.objects.all().delete()
        answer = api_client.post(path, example["value"], format="json")
        assert answer.status_code == int(success), (name, answer.content)
        assert set(answer.json()) <= keys, name  # answered in the documented shape


def test_the_batch_examples_answer_is_what_the_endpoint_answers(schema, api_client, llm_catalog):
    _, requests, answers = examples(schema, "/v1/events/batch")
    sent = requests["AGoodEventAndOneWithoutItsTokens"]["value"]
    answer = api_client.post("/v1/events/batch", sent, format="json")
    assert answer.json() == answers["TheGoodOneStoredAndTheBadOneRejected"]["value"]
