"""The portal home's cost and usage per day: exact, and consistent with the invoices."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import Invoice
from billing.portal.selectors import daily_figures, period_days
from billing.services import invoice_propose, subscription_period_close
from catalog.models import Price
from tests.factories import (
    CustomerFactory,
    CustomerUserFactory,
    InvoiceLineItemFactory,
    PriceFactory,
    SubscriptionFactory,
    ingest,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme(client, o1_subscriptions):
    assert client.login(username="acme@example.com", password="acme-demo")
    return client


def figures_of(invoice):
    first, last = period_days(invoice)
    return daily_figures(
        subscription=invoice.subscription, invoices=[invoice], first=first, last=last
    )


def usage_lines_total(invoice) -> Decimal:
    return sum(
        (line.amount for line in invoice.line_items.all() if line.price_type == "USAGE"),
        Decimal(0),
    )


def chart_totals(page: str, testid: str) -> list[Decimal]:
    chart = page.split(f'data-testid="{testid}"', 1)[1].split("</figure>", 1)[0]
    return [
        Decimal(t)
        for t in re.findall(r'class="bar" data-label="[^"]*" data-total="([^"]+)"', chart)
    ]


def test_the_demo_days_add_up_to_the_invoice_usage_lines(o1_subscriptions):
    invoice = Invoice.objects.get(subscription=o1_subscriptions["acme"], invoice_status="DRAFT")
    InvoiceLineItemFactory(invoice=invoice, amount=Decimal("9.99"))  # a fixed fee stays out
    figures = figures_of(invoice)
    assert figures.total_cost == usage_lines_total(invoice) == Decimal("202.50")
    assert figures.billed
    by_name = dict(figures.cost)
    assert sum(by_name["Output Tokens"]) == Decimal("120.00")
    assert sum(sum(values) for _, values in figures.usage) == Decimal(8_000_000)
    assert len(figures.days) >= 28  # the whole monthly period, a bar a day


def test_the_day_that_fills_a_package_carries_it(db):
    """$10 per 100 units, rounded up: 30 units on day one cost a whole package; 30 more on
    day two fit in it (0); 50 on day three open the second package."""
    start = timezone.now() - timedelta(days=3)
    price = PriceFactory(amount=Decimal(10), divide_by=100)
    customer = CustomerFactory(external_id="pack")
    subscription = SubscriptionFactory(customer=customer, plan=price.plan, start_date=start)
    ingest(
        *(
            {
                "event_id": f"pack-{day}",
                "event_name": "tokens",
                "external_customer_id": "pack",
                "timestamp": (start + timedelta(days=day, minutes=5)).isoformat(),
                "properties": {"tokens": tokens},
            }
            for day, tokens in [(0, 30), (1, 30), (2, 50)]
        )
    )
    invoice = invoice_propose(subscription=subscription)
    figures = figures_of(invoice)
    costs = [c for c in dict(figures.cost)[price.meter.feature.name] if c]
    assert costs == [Decimal("10.00"), Decimal("10.00")]
    assert figures.total_cost == invoice.total == Decimal("20.00")
    first = period_days(invoice)[0]
    cost = dict(zip(figures.days, dict(figures.cost)[price.meter.feature.name], strict=True))
    usage = dict(zip(figures.days, dict(figures.usage)[price.meter.feature.name], strict=True))
    assert cost[first] == Decimal(10) and cost[first + timedelta(days=1)] == 0
    assert cost[first + timedelta(days=2)] == Decimal(10)
    assert [usage[first + timedelta(days=n)] for n in range(3)] == [30, 30, 50]


def test_home_charts_this_period_with_bars_that_sum_to_the_proposed_usage(acme):
    response = acme.get(reverse("portal:home"))
    page = response.content.decode()
    assert response.status_code == 200
    assert sum(chart_totals(page, "cost-chart")) == Decimal("202.50")
    assert sum(chart_totals(page, "usage-chart")) == Decimal(8_000_000)
    assert "Cost per day" in page and "Usage per day" in page
    assert "Input Tokens" in page and "<title>" in page and 'class="tick"' in page


def test_last_period_shows_what_its_invoice_billed(acme, o1_subscriptions):
    subscription = o1_subscriptions["acme"]
    closed = subscription_period_close(
        subscription_id=subscription.pk, now=subscription.current_period_end
    )
    assert closed.invoice_status == "FINALIZED"
    Price.objects.update(amount=99)  # a catalog change does not reprice the closed period
    page = acme.get(reverse("portal:home"), {"range": "last"}).content.decode()
    assert sum(chart_totals(page, "cost-chart")) == Decimal("202.50")
    this = acme.get(reverse("portal:home")).content.decode()
    assert sum(chart_totals(this, "cost-chart")) == 0


def test_last_period_before_any_closed_says_so(acme):
    response = acme.get(reverse("portal:home"), {"range": "last"})
    assert response.status_code == 200
    assert "There is no previous period yet." in response.content.decode()


def test_custom_dates_cover_the_days_chosen(acme, o1_subscriptions):
    subscription = o1_subscriptions["acme"]
    day = subscription.current_period_start.date()
    page = acme.get(
        reverse("portal:home"),
        {"range": "custom", "start": (day - timedelta(days=2)).isoformat(), "end": day.isoformat()},
    ).content.decode()
    totals = chart_totals(page, "cost-chart")
    assert len(totals) == 3 and totals[-1] == Decimal("202.50") and totals[:2] == [0, 0]
    later = (day + timedelta(days=1)).isoformat()
    empty = acme.get(
        reverse("portal:home"), {"range": "custom", "start": later, "end": later}
    ).content.decode()
    assert chart_totals(empty, "cost-chart") == [0]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"range": "custom", "start": "2026-02-30", "end": "2026-03-01"}, "Enter a valid date"),
        (
            {"range": "custom", "start": "2026-03-02", "end": "2026-03-01"},
            "To must not be before From",
        ),
        ({"range": "custom", "start": "2025-01-01", "end": "2026-01-02"}, "at most 366 days"),
        ({"range": "custom", "start": "2026-01-01"}, "need both From and To"),
        ({"range": "custom", "start": "1999-12-31", "end": "2000-01-02"}, "from 2000-01-01"),
        ({"range": "yesterday"}, "Select a valid choice"),
    ],
)
def test_bad_dates_are_a_400_that_says_why(acme, query, message):
    response = acme.get(reverse("portal:home"), query)
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page and "<form" in page and 'data-testid="proposed-total"' in page


def test_a_year_of_days_is_allowed(acme):
    response = acme.get(
        reverse("portal:home"), {"range": "custom", "start": "2024-01-01", "end": "2024-12-31"}
    )
    assert response.status_code == 200  # 366 days, a leap year


def test_the_live_panel_marks_a_changed_total(acme, o1_subscriptions):
    same = acme.get(reverse("portal:live"), {"since": "old", "total": "202.50"}).content.decode()
    assert "live-changed" not in same and "changed" not in same.split("total-box", 1)[1][:20]
    moved = acme.get(reverse("portal:live"), {"since": "old", "total": "142.50"}).content.decode()
    assert 'class="total-box changed"' in moved and "Total updated" in moved


def test_a_customer_without_a_subscription_sees_no_charts(client):
    user = CustomerUserFactory(customer=CustomerFactory(external_id="nosub"))
    client.force_login(user.user)
    page = client.get(reverse("portal:home")).content.decode()
    assert "No subscription yet" in page and "cost-chart" not in page


@pytest.mark.parametrize("total", ["sNaN", "NaN", "x", ""])
def test_a_garbled_total_on_the_live_poll_is_no_cue_and_no_error(acme, total):
    response = acme.get(reverse("portal:live"), {"since": "old", "total": total})
    assert response.status_code == 200 and "live-changed" not in response.content.decode()


def close_acme(o1_subscriptions):
    subscription = o1_subscriptions["acme"]
    closed = subscription_period_close(
        subscription_id=subscription.pk, now=subscription.current_period_end
    )
    assert closed.invoice_status == "FINALIZED"
    return closed


def late(event_id, at, **properties):
    ingest(
        {
            "event_id": event_id,
            "event_name": "tokens",
            "external_customer_id": "acme",
            "timestamp": at.isoformat(),
            "properties": properties,
        }
    )


def test_late_usage_stays_out_of_a_closed_period(o1_subscriptions):
    closed = close_acme(o1_subscriptions)
    late(
        "late-1",
        closed.period_start + timedelta(minutes=1),
        model="OpenAI O1",
        prompt_type="output",
        tokens=5_000_000,
    )
    figures = figures_of(closed)
    assert figures.total_cost == Decimal("202.50") and figures.billed
    assert sum(sum(values) for _, values in figures.usage) == Decimal(8_000_000)


def test_late_usage_a_max_meter_cannot_take_out_is_said_so(client):
    from catalog.models import Meter

    meter_price = PriceFactory(
        meter__aggregation=Meter.Aggregation.MAX, amount=Decimal(1), divide_by=1
    )
    customer = CustomerFactory(external_id="peak")
    subscription = SubscriptionFactory(
        customer=customer, plan=meter_price.plan, start_date=timezone.now() - timedelta(hours=1)
    )
    at = subscription.current_period_start + timedelta(minutes=1)
    ingest(
        {
            "event_id": "p1",
            "event_name": "tokens",
            "external_customer_id": "peak",
            "timestamp": at.isoformat(),
            "properties": {"tokens": 3},
        }
    )
    closed = subscription_period_close(
        subscription_id=subscription.pk, now=subscription.current_period_end
    )
    assert closed.total == Decimal(3)
    ingest(
        {
            "event_id": "p2",
            "event_name": "tokens",
            "external_customer_id": "peak",
            "timestamp": at.isoformat(),
            "properties": {"tokens": 9},
        }
    )
    figures = figures_of(closed)
    assert not figures.billed
    client.force_login(CustomerUserFactory(customer=customer).user)
    page = client.get(reverse("portal:home"), {"range": "last"}).content.decode()
    assert "usage has arrived since these invoices were computed" in page
