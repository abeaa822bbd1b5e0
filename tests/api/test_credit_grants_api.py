"""/v1/creditgrants on Flexprice's wire: a plan's or a subscription's grants, given to the
subscriptions they cover, refused when they ask for what Tally does not do."""

from datetime import timedelta
from decimal import Decimal

import pytest
from flexprice import models
from flexprice.utils.serializers import unmarshal_json

from billing.models import CreditGrant, CreditGrantApplication, WalletTransaction
from tests.api.asserts import assert_error
from tests.factories import PlanFactory, PriceFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db


def sdk(response, model, status=200):
    assert response.status_code == status, response.content
    return unmarshal_json(response.content, model)


@pytest.fixture
def plan():
    return PriceFactory().plan


@pytest.fixture
def subscription(plan):
    return SubscriptionFactory(plan=plan)


def create(api_client, **body):
    return api_client.post("/v1/creditgrants", body, format="json")


MONTHLY = {
    "name": "$5 every month",
    "scope": "PLAN",
    "credits": "5",
    "cadence": "RECURRING",
    "expiration_type": "BILLING_CYCLE",
    "priority": 1,
}


def test_a_plan_grant_is_given_to_its_subscribers_for_their_current_period(
    api_client, plan, subscription
):
    grant = sdk(
        create(api_client, plan_id=plan.pk, metadata={"campaign": "launch"}, **MONTHLY),
        models.CreditGrantResponse,
        201,
    )
    assert (grant.scope, grant.plan_id, grant.cadence, grant.expiration_type) == (
        "PLAN",
        plan.pk,
        "RECURRING",
        "BILLING_CYCLE",
    )
    assert (grant.credits, grant.priority, grant.status) == ("5", 1, "published")
    assert grant.metadata == {"campaign": "launch"}
    block = WalletTransaction.objects.get(transaction_reason="SUBSCRIPTION_CREDIT_GRANT")
    assert block.wallet.customer_id == subscription.customer_id
    assert (block.credit_amount, block.priority) == (Decimal(5), 1)
    assert block.expiry_date == subscription.current_period_end
    # Given once for the period, however often grants are applied.
    create(api_client, plan_id=plan.pk, **{**MONTHLY, "name": "Another"})
    assert CreditGrantApplication.objects.filter(grant_id=grant.id).count() == 1


def test_a_subscription_grant_with_a_duration_expires_after_it(api_client, subscription):
    body = {
        "name": "Welcome",
        "scope": "SUBSCRIPTION",
        "subscription_id": subscription.pk,
        "credits": "2.5",
        "cadence": "ONETIME",
        "expiration_type": "DURATION",
        "expiration_duration": 2,
        "expiration_duration_unit": "WEEK",
    }
    grant = sdk(create(api_client, **body), models.CreditGrantResponse, 201)
    assert (grant.expiration_duration, grant.expiration_duration_unit) == (2, "WEEK")
    block = WalletTransaction.objects.get()
    assert block.credit_amount == Decimal("2.5")
    assert block.expiry_date == subscription.current_period_start + timedelta(weeks=2)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"period": "MONTHLY"}, "period"),
        ({"period_count": 1}, "period_count"),
        ({"conversion_rate": "1"}, "conversion_rate"),
        ({"topup_conversion_rate": "1"}, "topup_conversion_rate"),
        ({"addon_id": "addon_1"}, "addon_id"),
        ({"start_date": "2026-01-01T00:00:00Z"}, "start_date"),
        ({"end_date": "2026-01-01T00:00:00Z"}, "end_date"),
        ({"proration_behavior": "none"}, "proration_behavior"),
        ({"scope": "ADDON"}, "scope"),
        ({"cadence": "WEEKLY"}, "cadence"),
        ({"credits": "-1"}, "credits"),
        ({"credits": "0"}, "credits"),
        ({"credits": "1e30"}, "credits"),
        ({"expiration_type": "DURATION"}, "expiration_duration"),
        ({"expiration_type": "DURATION", "expiration_duration": 1}, "expiration_duration_unit"),
        ({"expiration_duration": 1}, "expiration_duration"),
        ({"expiration_duration_unit": "DAY"}, "expiration_duration_unit"),
        ({"priority": -1}, "priority"),
        ({"plan_id": "plan_nope"}, "plan_id"),
        ({"plan_id": None}, "plan_id"),
        ({"subscription_id": "sub_1"}, "subscription_id"),
        ({"name": ""}, "name"),
    ],
)
def test_a_grant_tally_cannot_honour_is_a_400_and_nothing_is_stored(
    api_client, plan, subscription, change, field
):
    body = {**MONTHLY, "plan_id": plan.pk, **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(create(api_client, **body), 400, field)
    assert not CreditGrant.objects.exists() and not WalletTransaction.objects.exists()


def test_recurring_grants_say_why_a_period_is_refused(api_client, plan):
    body = assert_error(create(api_client, plan_id=plan.pk, period="MONTHLY", **MONTHLY), 400)
    assert "once per billing period" in body["message"]


def test_grants_are_read_one_at_a_time_listed_and_listed_per_plan(api_client, plan):
    other = PlanFactory()
    mine = sdk(create(api_client, plan_id=plan.pk, **MONTHLY), models.CreditGrantResponse, 201)
    sdk(create(api_client, plan_id=other.pk, **MONTHLY), models.CreditGrantResponse, 201)
    one = sdk(api_client.get(f"/v1/creditgrants/{mine.id}"), models.CreditGrantResponse)
    assert one.id == mine.id and one.expiration_duration_unit is None
    listed = sdk(api_client.get("/v1/creditgrants"), models.ListCreditGrantsResponse)
    assert listed.pagination.total == 2
    filtered = sdk(
        api_client.get("/v1/creditgrants", {"plan_id": plan.pk}), models.ListCreditGrantsResponse
    )
    assert [g.id for g in filtered.items] == [mine.id]
    per_plan = sdk(
        api_client.get(f"/v1/plans/{plan.pk}/creditgrants"), models.ListCreditGrantsResponse
    )
    assert [g.id for g in per_plan.items] == [mine.id]
    assert_error(api_client.get("/v1/plans/plan_nope/creditgrants"), 404)
    assert_error(api_client.get("/v1/creditgrants/cg_nope"), 404)


def test_an_update_renames_and_nothing_else(api_client, plan):
    grant = sdk(create(api_client, plan_id=plan.pk, **MONTHLY), models.CreditGrantResponse, 201)
    path = f"/v1/creditgrants/{grant.id}"
    body = {"name": "Monthly credits", "metadata": {"a": "b"}}
    updated = sdk(api_client.put(path, body, format="json"), models.CreditGrantResponse)
    assert (updated.name, updated.metadata) == ("Monthly credits", {"a": "b"})
    for refused in ({"credits": "50"}, {"end_date": "2027-01-01T00:00:00Z"}, {"name": ""}):
        field = next(iter(refused))
        assert_error(api_client.put(path, refused, format="json"), 400, field)
    stored = CreditGrant.objects.get()
    assert (stored.name, stored.credits) == ("Monthly credits", Decimal(5))


def test_deleting_archives_the_grant_and_keeps_the_credits_given(api_client, plan, subscription):
    grant = sdk(create(api_client, plan_id=plan.pk, **MONTHLY), models.CreditGrantResponse, 201)
    path = f"/v1/creditgrants/{grant.id}"
    refused = api_client.delete(path, {"effective_date": "2027-01-01T00:00:00Z"}, format="json")
    assert_error(refused, 400, "effective_date")
    assert CreditGrant.objects.get().status == "published"
    answer = sdk(api_client.delete(path), models.SuccessResponse)
    assert answer.message == "credit grant archived"
    assert sdk(api_client.get(path), models.CreditGrantResponse).status == "archived"
    assert WalletTransaction.objects.filter(transaction_status="completed").count() == 1
    SubscriptionFactory(plan=plan)  # a new subscriber gets nothing from it
    assert WalletTransaction.objects.count() == 1
