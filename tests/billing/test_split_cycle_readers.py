"""Readers of a cycle closed early (issue 11's follow-up): the portal's days, the "late"
rule and the invoice document each see the parts of a cycle as billing it once."""

import re
from datetime import date, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import User
from django.urls import reverse

from billing.overview import invoices_with_late_usage, late_invoices_of
from billing.portal.selectors import (
    daily_figures,
    event_marks,
    invoice_rows,
    subscription_invoices,
)
from billing.selectors import invoice_late_usage
from catalog.money import format_money
from metering.models import Customer, Event
from tests.billing.test_close_early import (  # noqa: F401 (the plan fixture)
    at,
    close,
    close_early,
    draft_of,
    plan,
    recompute,
    subscribe,
    use,
    wide_plan,
)
from tests.factories import CustomerUserFactory, ingest

pytestmark = pytest.mark.django_db

FEB_END = at(2028, 2, 29, 9, 30)


@pytest.fixture
def split(plan):  # noqa: F811
    """2.5M tokens on Feb 10 ($45: 3 started millions), closed early on Feb 15, 1M tokens
    on Feb 20: the continuation bills 4 millions ($60) less the $45, so $15."""
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10, 8), 2_500_000)
    early = close_early(sub)
    use("acme", 2, at(2028, 2, 20, 8), 1_000_000)
    return sub, early, recompute(sub)


def usage_total(invoice) -> Decimal:
    return sum(
        (line.amount for line in invoice.line_items.all() if line.price_type == "USAGE"),
        Decimal(0),
    )


def test_the_days_of_a_split_cycle_add_up_to_what_its_parts_billed(split):
    sub, early, rest = split
    assert (usage_total(early), usage_total(rest)) == (Decimal(45), Decimal(15))
    first, last = date(2028, 1, 31), date(2028, 2, 28)
    invoices = subscription_invoices(subscription=sub, first=first, last=last)
    figures = daily_figures(subscription=sub, invoices=invoices, first=first, last=last)
    assert figures.total_cost == Decimal(60)
    assert figures.billed


def test_each_part_shows_its_own_days_only(split):
    sub, early, rest = split
    first, last = date(2028, 1, 31), date(2028, 2, 28)
    for invoice in (early, rest):
        figures = daily_figures(subscription=sub, invoices=[invoice], first=first, last=last)
        assert figures.total_cost == usage_total(invoice)
        assert figures.billed
    mine = daily_figures(subscription=sub, invoices=[rest], first=first, last=last)
    cost = dict(zip(mine.days, dict(mine.cost)["Tokens"], strict=True))
    usage = dict(zip(mine.days, dict(mine.usage)["Tokens"], strict=True))
    assert not any(cost[d] or usage[d] for d in mine.days if d < date(2028, 2, 15))
    assert sum(usage.values()) == 1_000_000  # the earlier part's usage is not shown again
    assert cost[date(2028, 2, 15)] == 0  # the cycle's cost through the split, less the $45
    assert cost[date(2028, 2, 20)] == Decimal(15)


def test_after_the_cycle_closes_the_parts_still_add_up(split):
    sub, early, _ = split
    final = close(sub, FEB_END)
    first, last = date(2028, 1, 31), date(2028, 2, 28)
    invoices = subscription_invoices(subscription=sub, first=first, last=last)
    assert len(invoices) == 2
    figures = daily_figures(subscription=sub, invoices=invoices, first=first, last=last)
    assert figures.total_cost == usage_total(early) + usage_total(final) == Decimal(60)


# --- one "is it late?" rule -------------------------------------------------------------


def sent(n: int, moment, *, stored, tokens: int = 1_000) -> Event:
    """An event of ``moment`` that reaches Tally at ``stored``."""
    with time_machine.travel(stored, tick=False):
        ingest(
            {
                "event_id": f"acme-{n}",
                "event_name": "tokens",
                "external_customer_id": "acme",
                "timestamp": moment.isoformat(),
                "properties": {"tokens": tokens},
            }
        )
    return Event.objects.get(event_id=f"acme-{n}")


@pytest.fixture
def straggler(split):
    """An event of Feb 14, before the split, stored on Feb 16, after the early part closed:
    the continuation bills it, so it is late nowhere."""
    sub, early, _ = split
    event = sent(3, at(2028, 2, 14), stored=at(2028, 2, 16))
    return sub, early, recompute(sub), event


def marks(*events) -> list[str]:
    customer = Customer.objects.get(external_id="acme")
    return [str(m) for m in event_marks(customer=customer, events=list(events))]


def test_a_part_closed_early_has_no_late_usage_anywhere(straggler):
    sub, early, rest, event = straggler
    assert invoice_late_usage(invoice=early).event_count == 0
    assert invoices_with_late_usage(now=at(2028, 2, 16, 12)).value == 0
    assert late_invoices_of(events=[event]) == {}
    billed_early = Event.objects.get(event_id="acme-1")
    assert marks(billed_early, event) == [
        f"billed: Tokens on {early.invoice_number}",
        "billed: Tokens (proposed invoice)",
    ]


def test_after_the_cycle_closes_an_event_is_billed_on_the_part_that_first_counted_it(straggler):
    sub, early, _, event = straggler
    final = close(sub, FEB_END)
    before_split, after_split = Event.objects.get(event_id="acme-1"), event
    assert marks(before_split, after_split, Event.objects.get(event_id="acme-2")) == [
        f"billed: Tokens on {early.invoice_number}",
        f"billed: Tokens on {final.invoice_number}",
        f"billed: Tokens on {final.invoice_number}",
    ]


def test_usage_of_before_the_split_stored_after_the_cycle_closed_is_late_on_its_last_part(
    straggler, admin_client
):
    sub, early, _, _ = straggler
    final = close(sub, FEB_END)
    stored = FEB_END + timedelta(hours=1)
    late = sent(4, at(2028, 2, 12), stored=stored)
    assert invoice_late_usage(invoice=final).event_count == 1
    assert invoices_with_late_usage(now=stored).value == 1
    assert late_invoices_of(events=[late]) == {late.id: final}
    assert marks(late) == [f"not billed: late: it arrived after {final.invoice_number} was closed"]
    admin_client.force_login(User.objects.get(username="admin"))
    html = admin_client.get(reverse("admin:metering_event_changelist")).content.decode()
    feeds = dict(
        re.findall(
            r'<th class="field-event_id"><a [^>]*>([^<]+)</a></th>.*?'
            r'<td class="field-feeds">(.*?)</td>',
            html,
            re.S,
        )
    )
    assert feeds["acme-4"].endswith(f"(late: after invoice {final.invoice_number})</span>")
    assert "late" not in feeds["acme-3"] and "late" not in feeds["acme-1"]


# --- split-cycle invoices explain themselves --------------------------------------------


def document(client, invoice) -> str:
    customer = invoice.customer
    CustomerUserFactory(customer=customer)
    assert client.login(username=f"{customer.external_id}@example.com", password="acme-demo")
    return client.get(reverse("portal:invoice", args=[invoice.pk])).content.decode()


def test_the_continuation_line_says_it_prices_the_whole_cycle_less_what_was_billed(split, client):
    _, early, rest = split
    tokens = next(row for row in invoice_rows(rest) if row.name == "Tokens")
    note = (
        "Cycle Jan 31 – Feb 29: 3,500,000 tokens, $60.00, "
        f"less $45.00 billed on {early.invoice_number}"
    )
    assert (tokens.quantity, tokens.amount, tokens.cycle_note) == (3_500_000, Decimal(15), note)
    assert all(row.cycle_note == "" for row in invoice_rows(early))
    html = document(client, rest)
    assert f'data-testid="cycle-note">{note}</small>' in html


def test_a_negative_part_reads_as_a_credit_not_an_amount_due(wide_plan, client):  # noqa: F811
    """The gauge reads 100 ($50) before the split and 10 at the cycle's end ($5): the part
    continuing the cycle gives $45 back on it, more than its $25 of fixed fees."""
    sub = subscribe(wide_plan)
    use("acme", 1, at(2028, 2, 10, 8), 1, gauge=100)
    close_early(sub)
    use("acme", 2, at(2028, 2, 20, 8), 1, gauge=10)
    rest = recompute(sub)
    assert rest.total < 0
    assert rest.amount_due == 0 and rest.credit == -rest.total
    html = document(client, rest)
    credit = format_money(rest.credit, "usd")
    assert f'data-testid="credit">Credit {credit} so far</p>' in html
    assert 'data-testid="amount-due">$0.00<' in html
    assert f'data-testid="credit-note">{credit}<' in html
    assert f"-{credit} so far" not in html and "$0.00 so far" not in html
