"""The operator's overview: figures checked against sums worked out here from the invoices,
lines and raw events the fixtures made, never against numbers typed in."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from billing import overview as ov
from billing.models import Invoice, InvoiceLineItem
from billing.services import periods_close
from billing.tasks import recompute_requests
from catalog.models import Meter
from metering.aggregation import matches, parse_number
from metering.models import Event
from tests.factories import (
    CustomerFactory,
    PlanFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_overview():
    """The admin index shows the overview from the shared cache: each test computes anew."""
    cache.delete(ov.OVERVIEW_KEY)
    yield
    cache.delete(ov.OVERVIEW_KEY)


def tokens(customer: str, event_id: str, at, amount=1, prompt_type="input", model="OpenAI O1"):
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": customer,
        "timestamp": at.isoformat(),
        "properties": {"model": model, "prompt_type": prompt_type, "tokens": amount},
    }


@pytest.fixture
def month(o1_plan, o1_subscriptions):
    """A month later: the demo's first periods closed (acme, globex in usd, hooli in eur),
    new usage in the open periods, one late event, one of an unknown customer and one no
    meter counts. Returns the moment to look from."""
    input_meter = Meter.objects.get(feature__lookup_key="o1-input")
    eur_plan = PlanFactory(name="Euro tokens")
    PriceFactory(
        plan=eur_plan, meter=input_meter, currency="eur", amount=Decimal("9"), divide_by=1000
    )
    acme = o1_subscriptions["acme"]
    start = acme.current_period_start
    hooli = SubscriptionFactory(
        customer=CustomerFactory(external_id="hooli"), plan=eur_plan, start_date=start
    )
    ingest(tokens("hooli", "hooli-1", start + timedelta(minutes=5), amount=2500))
    closed_at = acme.current_period_end + timedelta(minutes=5)
    with time_machine.travel(closed_at, tick=False):
        periods_close(now=timezone.now())
    now = closed_at + timedelta(minutes=20)
    with time_machine.travel(now, tick=False):
        ingest(
            tokens("acme", "open-acme", now - timedelta(minutes=10), amount=3_000_000),
            tokens("acme", "open-acme-out", now - timedelta(minutes=9), 10, "output"),
            tokens("hooli", "open-hooli", now - timedelta(minutes=8), amount=1200),
            tokens("acme", "late-acme", start + timedelta(minutes=30), amount=5),
            tokens("ghost", "ghost-1", now - timedelta(minutes=7)),
            tokens("acme", "other-model", now - timedelta(minutes=6), model="gpt-x"),
        )
        for subscription in (acme, o1_subscriptions["globex"], hooli):
            subscription.refresh_from_db()
            from billing.services import invoice_propose

            invoice_propose(subscription=subscription)
    return now


def by_currency(invoices) -> dict[str, Decimal]:
    sums = defaultdict(Decimal)
    for invoice in invoices:
        sums[invoice.currency] += invoice.total
    return dict(sums)


def billed_this_month(now):
    start = ov.month_start(now)
    return [
        i
        for i in Invoice.objects.all()
        if i.invoice_status == "FINALIZED" and start <= i.finalized_at < now
    ]


def test_month_to_date_billed_and_proposed_are_per_currency(month):
    billed = billed_this_month(month)
    drafts = list(Invoice.objects.filter(invoice_status="DRAFT"))
    assert {i.customer.external_id for i in billed} == {"acme", "globex", "hooli"}

    assert ov.revenue_billed(start=ov.month_start(month), end=month) == by_currency(billed)
    assert ov.revenue_proposed() == by_currency(drafts)
    assert set(ov.revenue_proposed()) == {"usd", "eur"}  # two currencies, never one sum


def test_revenue_by_plan_and_feature_add_up_the_lines(month):
    start = ov.month_start(month)
    billed_ids = {i.pk for i in billed_this_month(month)}
    expected_plan, expected_feature = defaultdict(Decimal), defaultdict(Decimal)
    for line in InvoiceLineItem.objects.select_related("invoice__subscription__plan", "meter"):
        invoice = line.invoice
        if invoice.pk in billed_ids:
            column = "billed"
        elif invoice.invoice_status == "DRAFT":
            column = "proposed"
        else:
            continue
        feature = line.meter.feature.name if line.meter else line.display_name
        expected_plan[(invoice.subscription.plan.name, line.currency, column)] += line.amount
        expected_feature[(feature, line.currency, column)] += line.amount

    def flat(rows):
        found = {}
        for row in rows:
            for column in ("billed", "proposed"):
                if getattr(row, column):
                    found[(row.name, row.currency, column)] = getattr(row, column)
        return found

    nonzero = {k: v for k, v in expected_plan.items() if v}
    assert flat(ov.revenue_by_plan(start=start, end=month)) == nonzero
    nonzero = {k: v for k, v in expected_feature.items() if v}
    assert flat(ov.revenue_by_feature(start=start, end=month)) == nonzero
    # Each billed sum equals the billed invoices' subtotals in that currency.
    for currency, total in by_currency(billed_this_month(month)).items():
        rows = ov.revenue_by_plan(start=start, end=month)
        assert sum(r.billed for r in rows if r.currency == currency) == total


def test_top_customers_rank_by_current_draft_within_each_currency(month):
    drafts = Invoice.objects.filter(invoice_status="DRAFT", total__gt=0).select_related("customer")
    expected = sorted(
        ((d.currency, -d.total, d.customer.external_id) for d in drafts),
    )
    found = [(r.currency, -r.amount, r.customer.external_id) for r in ov.top_customers()]
    assert sorted(found) == expected
    assert [r.customer.external_id for r in ov.top_customers(limit=1) if r.currency == "usd"] == [
        max((d for d in drafts if d.currency == "usd"), key=lambda d: d.total).customer.external_id
    ]


def test_usage_chart_matches_the_raw_events_per_day(month):
    start = ov.month_start(month)
    expected = defaultdict(Decimal)
    meters = list(Meter.objects.select_related("feature"))
    for event in Event.objects.filter(timestamp__gte=start, timestamp__lt=month):
        for meter in meters:
            if matches(meter, event.event_name, event.properties):
                day = event.timestamp.date()
                value = parse_number(event.properties[meter.field])
                expected[(meter.feature.name, f"{day:%b} {day.day}")] += value

    charts = ov.usage_charts(start=start, end=month)
    assert [c.unit for c in charts] == ["tokens"]  # all three features count tokens
    [chart] = charts
    assert len(chart.labels) == (month - start).days + 1
    found = {
        (name, label): value
        for name, values in chart.series
        for label, value in zip(chart.labels, values, strict=True)
        if value
    }
    assert found == dict(expected)
    assert expected  # the fixture's open-period usage is there


def test_attention_counts_find_late_unknown_unmetered_and_waiting(month):
    assert str(ov.invoices_with_late_usage(now=month)) == "1"
    assert ov.unknown_customer_events(now=month).value == 1
    assert ov.unmetered_events(now=month).value == 1
    assert ov.drafts_waiting(now=month).value == 0

    draft = Invoice.objects.get(invoice_status="DRAFT", customer__external_id="globex")
    with time_machine.travel(month + timedelta(minutes=5), tick=False):
        from config.coalesce import _store

        _store().mark(recompute_requests.pending_key, "test-flag", draft.subscription_id, 1)
        try:
            assert ov.drafts_waiting(now=timezone.now()).value == 1
            assert ov.drafts_waiting(now=draft.last_computed_at).value == 0
        finally:
            _store().end(recompute_requests.pending_key, draft.subscription_id, "")


def test_attention_counts_stop_at_their_cap(o1_plan, monkeypatch):
    from config.coalesce import _store

    monkeypatch.setattr(ov, "ATTENTION_CAP", 2)
    subscriptions = [SubscriptionFactory(plan=o1_plan) for _ in range(3)]
    for subscription in subscriptions:
        _store().mark(recompute_requests.pending_key, "test-flag", subscription.pk, 1)
    try:
        count = ov.drafts_waiting(now=timezone.now() + timedelta(hours=1))
        assert (count.value, count.capped, str(count)) == (2, True, "2+")
    finally:
        for subscription in subscriptions:
            _store().end(recompute_requests.pending_key, subscription.pk, "")


def test_admin_index_shows_the_overview_with_links(client, admin_user, month):
    with time_machine.travel(month, tick=False):
        client.force_login(admin_user)  # a session from before the month would have expired
        page = client.get(reverse("admin:index"))
    html = page.content.decode()
    assert page.status_code == 200
    assert "<title>Overview | Tally</title>" in html and "Django administration" not in html
    assert 'rel="icon"' in html and "favicon.svg" in html
    assert reverse("admin:billing_invoice_late_usage") in html
    assert reverse("admin:metering_customer_unmatched") in html
    assert "<svg" in html and 'data-testid="usage-chart"' in html
    assert 'class="app-billing module' in html  # the app list is still there


def test_overview_is_hidden_from_staff_who_may_not_see_invoices(client, month):
    from django.contrib.auth.models import User

    User.objects.create_user("clerk", password="pw-clerk-123", is_staff=True)
    client.login(username="clerk", password="pw-clerk-123")
    html = client.get(reverse("admin:index")).content.decode()
    assert 'data-testid="overview"' not in html


def test_admin_index_shows_the_overview_from_the_cache_for_a_minute(client, admin_user, month):
    with time_machine.travel(month, tick=False):
        client.force_login(admin_user)
        first = client.get(reverse("admin:index")).context["overview"]["figures"]
        ingest(tokens("ghost", "ghost-2", month - timedelta(minutes=1)))
        second = client.get(reverse("admin:index")).context["overview"]["figures"]
    assert second == first and first.unknown_customer_events.value == 1
    with time_machine.travel(month + timedelta(seconds=ov.OVERVIEW_SECONDS + 1), tick=False):
        cache.delete(ov.OVERVIEW_KEY)  # expiry: Redis keeps its own clock, not the travel
        again = client.get(reverse("admin:index"))
    assert again.context["overview"]["figures"].unknown_customer_events.value == 2
