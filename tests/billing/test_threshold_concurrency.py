"""Issue 13 on PostgreSQL: recomputes that see one threshold crossing at once make one interim
invoice, whatever the interleaving, and every event is billed once."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Sum
from django.utils import timezone

from billing import services
from billing.models import Invoice, Subscription
from billing.selectors import late_usage
from catalog.models import Price
from tests.billing.test_late_usage import finish, in_thread, require_postgresql
from tests.billing.test_wallet_concurrency import race, tokens
from tests.factories import (
    CustomerFactory,
    MeterFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db(transaction=True)

THRESHOLD = Invoice.BillingReason.AUTO_INVOICE_THRESHOLD


@pytest.fixture
def subscription():
    """acme at $15 per million tokens, pro rata, a day into its period."""
    require_postgresql()
    plan = PlanFactory()
    PriceFactory(plan=plan, meter=MeterFactory(), amount=Decimal(15), round=Price.Round.NONE)
    day_ago = timezone.now() - timedelta(days=1)
    return SubscriptionFactory(
        customer=CustomerFactory(external_id="acme"),
        plan=plan,
        start_date=day_ago,
        billing_anchor=day_ago,
    )


def crossed(subscription, tokens_sent: int) -> None:
    """Usage over the threshold that no recompute has looked at yet: ingest recomputes at
    once in tests, so the threshold is set after it."""
    ingest(tokens(1, tokens_sent))
    Subscription.objects.filter(pk=subscription.pk).update(auto_invoice_threshold=50)
    subscription.refresh_from_db()


def interims(subscription):
    return Invoice.objects.filter(subscription=subscription, billing_reason=THRESHOLD)


def billed(subscription) -> Decimal:
    closed = Invoice.objects.filter(subscription=subscription).exclude(invoice_status="DRAFT")
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")
    return closed.aggregate(s=Sum("subtotal"))["s"] + draft.subtotal


def test_two_recomputes_that_both_see_the_crossing_make_one_interim_invoice(
    subscription, monkeypatch
):
    """Both threads find the threshold reached before either takes the subscription's lock
    (a barrier holds each after its first look); the one that locks second finds the
    crossing billed."""
    crossed(subscription, 4_000_000)  # $60 over $50
    both_looked = threading.Barrier(2)
    looks, guard = [], threading.Lock()
    reached = services.threshold_reached

    def look_then_wait(**kwargs):
        answer = reached(**kwargs)
        with guard:
            looks.append(answer)
            first_look = len(looks) <= 2
        if first_look:
            both_looked.wait(10)
        return answer

    monkeypatch.setattr(services, "threshold_reached", look_then_wait)
    threads = [
        in_thread(lambda: services.subscription_recompute(subscription_id=subscription.pk))
        for _ in range(2)
    ]
    drafts = [finish(t) for t in threads]

    assert looks[:2] == [True, True]  # both saw the crossing unlocked
    assert looks[2:] == [True, False]  # under the lock: the first bills it, the second not
    [interim] = interims(subscription)
    assert interim.invoice_status == "FINALIZED" and interim.subtotal == Decimal("60.00")
    draft = Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")
    assert {d.pk for d in drafts} == {draft.pk}
    assert billed(subscription) == Decimal("60.00")


def test_barrier_released_threshold_checks_at_one_instant_make_one_invoice(subscription):
    crossed(subscription, 4_000_000)
    now = timezone.now()
    outcomes = race(
        6, lambda i: services.subscription_threshold_invoice(subscription=subscription, now=now)
    )
    assert sum(o is not None for o in outcomes) == 1
    assert interims(subscription).count() == 1


def test_stress_ingest_and_recomputes_bill_each_crossing_once_and_every_event_once(
    subscription,
):
    """Eight threads each send events worth $9 and recompute, over and over; at the end the
    interim invoices and the draft bill exactly what was sent, each interim at least $50."""
    Subscription.objects.filter(pk=subscription.pk).update(auto_invoice_threshold=50)
    rounds = 6

    def worker(i):
        for r in range(rounds):
            ingest(tokens(i * 100 + r, 600_000))  # $9
            services.subscription_recompute(subscription_id=subscription.pk)

    race(8, worker)
    services.subscription_recompute(subscription_id=subscription.pk)

    parts = list(interims(subscription))
    assert parts and all(p.subtotal >= 50 for p in parts)
    starts = sorted((p.period_start, p.period_end) for p in parts)
    assert all(a[1] == b[0] for a, b in zip(starts, starts[1:], strict=False))  # no overlap
    assert billed(subscription) == Decimal(9 * 8 * rounds)
    assert late_usage() == []
