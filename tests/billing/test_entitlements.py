"""The "may I?" rule, usage periods, the summary's figures, and entitlement.exceeded."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.utils import timezone

from billing.budgets import budget_capped, budget_set, customer_budgets_check
from billing.entitlements import (
    BUDGET_CAPPED,
    FEATURE_DISABLED,
    USAGE_LIMIT_REACHED,
    WALLET_EMPTY,
    customer_usage_summary,
    entitlements_exceeded_record,
    usage_denied,
    usage_period,
)
from billing.models import EntitlementUsageExceeded, EventType, OutboxEvent
from billing.services import invoice_propose
from billing.tasks import subscription_recompute
from billing.wallets import wallet_create, wallet_update
from catalog.models import Entitlement, Feature
from catalog.services import entitlement_create, entitlement_update, plan_version_create
from tests.billing.test_late_usage import finish, in_thread, require_postgresql
from tests.factories import (
    CustomerFactory,
    FeatureFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

METERED, BOOLEAN = Feature.Type.METERED, Feature.Type.BOOLEAN


@pytest.mark.parametrize(
    ("inputs", "denied"),
    [
        ({}, None),
        ({"is_enabled": False}, FEATURE_DISABLED),
        ({"current_usage": Decimal(99)}, None),
        ({"current_usage": Decimal(100)}, USAGE_LIMIT_REACHED),
        ({"current_usage": Decimal(100), "is_soft_limit": True}, None),
        ({"current_usage": Decimal(10**9), "usage_limit": None}, None),
        ({"usage_limit": 0, "current_usage": Decimal(0)}, USAGE_LIMIT_REACHED),
        ({"prepaid_exhausted": True}, WALLET_EMPTY),
        ({"budget_capped": True}, BUDGET_CAPPED),
        ({"feature_type": BOOLEAN}, None),
        ({"feature_type": BOOLEAN, "is_enabled": False}, FEATURE_DISABLED),
        ({"feature_type": BOOLEAN, "prepaid_exhausted": True, "budget_capped": True}, None),
        ({"is_enabled": False, "current_usage": Decimal(100)}, FEATURE_DISABLED),
    ],
)
def test_usage_denied_names_the_reason_a_use_is_refused(inputs, denied):
    base = {
        "feature_type": METERED,
        "is_enabled": True,
        "current_usage": Decimal(0),
        "usage_limit": 100,
        "is_soft_limit": False,
        "prepaid_exhausted": False,
    }
    assert usage_denied(**{**base, **inputs}) == denied


def use(tokens: int, *, at=None, n=[0]):  # noqa: B006 (a counter for unique ids)
    n[0] += 1
    ingest(
        {
            "event_id": f"use-{n[0]}",
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": (at or timezone.now() - timedelta(seconds=5)).isoformat(),
            "properties": {"tokens": tokens},
        }
    )


def summary(entitled, **kwargs):
    return customer_usage_summary(customer=entitled["sub"].customer, **kwargs)[1]


def test_usage_counts_against_the_limit_until_a_hard_limit_refuses(entitled):
    use(400)
    (feature,) = summary(entitled)
    assert (feature.current_usage, feature.remaining, feature.usage_percent) == (
        Decimal(400),
        Decimal(600),
        Decimal("40.00"),
    )
    assert feature.allowed and feature.entitlement.total_limit == 1000
    use(600)
    (feature,) = summary(entitled)
    assert (feature.allowed, feature.denied, feature.remaining) == (
        False,
        USAGE_LIMIT_REACHED,
        Decimal(0),
    )


def test_a_soft_limit_reached_still_allows(entitled):
    entitlement_update(entitlement=entitled["entitlement"], is_soft_limit=True)
    use(1500)
    (feature,) = summary(entitled)
    assert feature.allowed and feature.usage_percent == Decimal("150.00")
    assert feature.entitlement.is_soft_limit


def test_a_disabled_or_archived_entitlement_and_an_unentitled_feature_refuse(entitled):
    other = FeatureFactory(type=BOOLEAN)
    entitlement_update(entitlement=entitled["entitlement"], is_enabled=False)
    features = summary(entitled, features=[entitled["meter"].feature, other])
    assert [(f.entitlement.feature, f.denied) for f in features] == [
        (entitled["meter"].feature, FEATURE_DISABLED),
        (other, FEATURE_DISABLED),
    ]
    entitled["entitlement"].status = Entitlement.Status.ARCHIVED
    entitled["entitlement"].save()
    assert summary(entitled) == []


def test_a_boolean_entitlement_allows_and_a_static_one_carries_its_value(entitled):
    flag = FeatureFactory(type=BOOLEAN, name="A SSO")
    tier = FeatureFactory(type=Feature.Type.STATIC, name="B support")
    entitlement_create(plan=entitled["plan"], feature=flag, feature_type=BOOLEAN)
    entitlement_create(
        plan=entitled["plan"], feature=tier, feature_type="static", static_value="premium"
    )
    features = {f.entitlement.feature.pk: f for f in summary(entitled)}
    assert features[flag.pk].allowed and features[tier.pk].allowed
    assert features[tier.pk].entitlement.static_values == ["premium"]


def test_an_empty_prepaid_wallet_refuses_unless_it_tops_up_automatically(entitled):
    wallet = wallet_create(
        customer=entitled["sub"].customer, currency="usd", initial_credits=Decimal(1)
    )
    (feature,) = summary(entitled)
    assert feature.allowed and feature.wallet.real_time_balance == Decimal(1)
    use(200_000)  # $15 per million, a package: $15 > $1
    (feature,) = summary(entitled)
    assert feature.wallet.real_time_balance == Decimal(-14)
    assert feature.denied == USAGE_LIMIT_REACHED  # the limit is checked first
    entitlement_update(entitlement=entitled["entitlement"], usage_limit=None)
    (feature,) = summary(entitled)
    assert feature.denied == WALLET_EMPTY and feature.remaining is None
    wallet_update(
        wallet=wallet, auto_topup_enabled=True, auto_topup_threshold=Decimal(0),
        auto_topup_amount=Decimal(50),
    )  # fmt: skip
    (feature,) = summary(entitled)
    assert feature.allowed


def test_a_customers_hard_capped_budget_reached_refuses_the_check(
    entitled, django_capture_on_commit_callbacks
):
    customer = entitled["sub"].customer
    budget_set(customer=customer, amount=Decimal(15), currency="usd", hard_cap=True)
    use(100)  # one $15 package: the budget's 100 %
    invoice_propose(subscription=entitled["sub"])
    (feature,) = summary(entitled)
    assert feature.allowed  # the draft moved, but the budgets were not checked yet
    with django_capture_on_commit_callbacks(execute=True):  # the check's commit
        customer_budgets_check(customer_id=customer.pk)
    (feature,) = summary(entitled)
    assert feature.denied == BUDGET_CAPPED


def test_a_capped_budget_of_another_feature_leaves_this_one_allowed(
    entitled, django_capture_on_commit_callbacks
):
    customer = entitled["sub"].customer
    other = MeterFactory(event_name="images").feature
    budget_set(
        customer=customer, feature=other, amount=Decimal("0.01"), currency="usd", hard_cap=True
    )
    PriceFactory(plan=entitled["plan"], meter=other.meter)
    ingest({"event_name": "images", "external_customer_id": "acme", "properties": {"tokens": 1}})
    invoice_propose(subscription=entitled["sub"])
    with django_capture_on_commit_callbacks(execute=True):
        customer_budgets_check(customer_id=customer.pk)
    assert budget_capped(customer_id=customer.pk, feature_id=other.pk)
    (feature,) = summary(entitled)
    assert feature.allowed


def test_an_entitlement_with_a_bad_type_or_terms_is_refused(entitled):
    flag = FeatureFactory(type=BOOLEAN)
    with pytest.raises(ValidationError) as wrong:
        entitlement_create(plan=entitled["plan"], feature=flag, feature_type=METERED)
    assert "feature_type" in wrong.value.message_dict
    with pytest.raises(ValidationError) as limited:
        entitlement_create(plan=entitled["plan"], feature=flag, feature_type=BOOLEAN, usage_limit=5)
    assert "usage_limit" in limited.value.message_dict
    with pytest.raises(ValidationError) as twice:
        entitlement_create(
            plan=entitled["plan"], feature=entitled["meter"].feature, feature_type=METERED
        )
    assert twice.value.error_dict["__all__"][0].code == "unique"


def test_a_new_plan_version_copies_its_entitlements(entitled):
    copy = plan_version_create(plan=entitled["plan"])
    (entitlement,) = copy.entitlements.all()
    assert (entitlement.feature, entitlement.usage_limit) == (entitled["meter"].feature, 1000)


# Usage periods


class Sub:
    """Only what ``usage_period`` reads."""

    def __init__(self, **kw):
        defaults = dict(
            billing_period="MONTHLY",
            billing_period_count=1,
            billing_anchor=datetime(2026, 1, 15, 12, tzinfo=UTC),
            start_date=datetime(2026, 1, 15, 12, tzinfo=UTC),
            current_period_start=datetime(2026, 3, 15, 12, tzinfo=UTC),
            current_period_end=datetime(2026, 4, 15, 12, tzinfo=UTC),
        )
        self.__dict__.update({**defaults, **kw})


NOW = datetime(2026, 3, 20, 18, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reset", "sub", "expected"),
    [
        ("", {}, ((2026, 3, 15, 12), (2026, 4, 15, 12), (2026, 4, 15, 12))),
        ("MONTHLY", {}, ((2026, 3, 15, 12), (2026, 4, 15, 12), (2026, 4, 15, 12))),
        ("DAILY", {}, ((2026, 3, 20, 12), (2026, 3, 21, 12), (2026, 3, 21, 12))),
        ("WEEKLY", {}, ((2026, 3, 19, 12), (2026, 3, 26, 12), (2026, 3, 26, 12))),
        ("ANNUAL", {}, ((2026, 1, 15, 12), (2027, 1, 15, 12), (2027, 1, 15, 12))),
        ("NEVER", {}, ((2026, 1, 15, 12), (2026, 4, 15, 12), None)),
        # A later start cuts the first window; the subscription's own period follows it.
        (
            "QUARTERLY",
            {"start_date": datetime(2026, 2, 1, tzinfo=UTC)},
            ((2026, 2, 1, 0), (2026, 4, 15, 12), (2026, 4, 15, 12)),
        ),
        (
            "DAILY",
            {
                "billing_period": "DAILY",
                "current_period_start": NOW.replace(hour=12),
                "current_period_end": NOW.replace(hour=12) + timedelta(days=1),
            },
            ((2026, 3, 20, 12), (2026, 3, 21, 12), (2026, 3, 21, 12)),
        ),  # fmt: skip
    ],
)
def test_usage_period_per_reset_period(reset, sub, expected):
    def moment(parts):
        return None if parts is None else datetime(*parts, tzinfo=UTC)

    assert usage_period(subscription=Sub(**sub), reset_period=reset, now=NOW) == tuple(
        moment(p) for p in expected
    )


def test_a_daily_limit_counts_from_the_daily_boundary(entitled):
    entitlement_update(entitlement=entitled["entitlement"], usage_reset_period="DAILY")
    anchor = entitled["sub"].billing_anchor
    now = timezone.now()
    start, end, _ = usage_period(subscription=entitled["sub"], reset_period="DAILY", now=now)
    assert start.time() == anchor.time() and end - start == timedelta(days=1)
    use(700, at=start - timedelta(seconds=1))  # yesterday's window
    use(300, at=max(start, now - timedelta(seconds=30)))
    (feature,) = summary(entitled, now=now)
    assert feature.current_usage == Decimal(300)
    assert feature.entitlement.next_usage_reset_at == end
    with time_machine.travel(end + timedelta(seconds=1)):
        (feature,) = summary(entitled)
    assert feature.current_usage == Decimal(0)


# entitlement.exceeded


def exceeded_events():
    return list(OutboxEvent.objects.filter(event_type=EventType.ENTITLEMENT_EXCEEDED))


def test_exceeded_is_emitted_once_per_period_when_usage_first_reaches_the_limit(entitled):
    use(999)
    subscription_recompute(subscription_id=entitled["sub"].pk)
    assert exceeded_events() == []
    use(1)
    subscription_recompute(subscription_id=entitled["sub"].pk)
    use(50)
    subscription_recompute(subscription_id=entitled["sub"].pk)
    (event,) = exceeded_events()
    assert event.data["current_usage"] == "1000"
    assert event.data["feature_id"] == entitled["meter"].feature.pk
    assert event.customer_id == entitled["sub"].customer_id
    row = EntitlementUsageExceeded.objects.get()
    assert row.period_start == entitled["sub"].current_period_start


def test_exceeded_counts_a_soft_limit_too(entitled):
    entitlement_update(entitlement=entitled["entitlement"], is_soft_limit=True)
    use(1000)
    subscription_recompute(subscription_id=entitled["sub"].pk)
    assert exceeded_events()[0].data["is_soft_limit"] is True


def acme_limited_to(limit: int):
    """acme, subscribed since yesterday to a plan entitling it to ``limit`` tokens."""
    meter = MeterFactory()
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=meter)
    entitlement_create(plan=plan, feature=meter.feature, feature_type=METERED, usage_limit=limit)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=timezone.now() - timedelta(days=1),
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_recomputes_emit_exceeded_once():
    require_postgresql()
    subscription = acme_limited_to(10)
    use(10)
    for _ in range(3):  # rounds, each with threads released together
        barrier = threading.Barrier(4)

        def run(pk=subscription.pk, barrier=barrier):
            barrier.wait(10)
            return entitlements_exceeded_record(subscription_id=pk)

        results = [finish(t, timeout=60) for t in [in_thread(run) for _ in range(4)]]
        assert sum(len(r) for r in results) <= 1
    assert len(exceeded_events()) == 1
    assert EntitlementUsageExceeded.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_record_racing_an_uncommitted_one_waits_and_emits_nothing(entitled):
    """A holds its record uncommitted while B, having passed the exists check, inserts."""
    require_postgresql()
    from django.db import transaction

    from billing.entitlements import _exceeded_record

    period = (entitled["sub"].current_period_start, entitled["sub"].current_period_end)
    held, go = (
        threading.Event(),
        dict(subscription=entitled["sub"], entitlement=entitled["entitlement"], period=period),
    )

    def first():
        with transaction.atomic():
            row = _exceeded_record(**go, usage=Decimal(1000))
            held.set()
            threading.Event().wait(0.5)  # B is blocked on the unique index meanwhile
        return row

    def second():
        held.wait(10)
        return _exceeded_record(**go, usage=Decimal(1001))

    a, b = in_thread(first), in_thread(second)
    assert finish(a) is not None and finish(b) is None
    assert len(exceeded_events()) == 1


@pytest.mark.django_db(transaction=True)
def test_stress_ingest_and_recompute_together_emit_exceeded_once():
    """Four threads each ingest ten one-token events, checking after each; the limit of
    20 is crossed somewhere among them."""
    require_postgresql()
    subscription = acme_limited_to(20)
    barrier = threading.Barrier(4)

    def work(i):
        barrier.wait(10)
        for n in range(10):
            ingest(
                {
                    "event_id": f"stress-{i}-{n}",
                    "event_name": "tokens",
                    "external_customer_id": "acme",
                    "timestamp": (timezone.now() - timedelta(seconds=5)).isoformat(),
                    "properties": {"tokens": 1},
                },
                fold=n % 3 == 0,
            )
            entitlements_exceeded_record(subscription_id=subscription.pk)

    for thread in [in_thread(work, i) for i in range(4)]:
        finish(thread, timeout=120)
    entitlements_exceeded_record(subscription_id=subscription.pk)
    (event,) = exceeded_events()
    assert int(event.data["current_usage"]) >= 20
    assert EntitlementUsageExceeded.objects.count() == 1
