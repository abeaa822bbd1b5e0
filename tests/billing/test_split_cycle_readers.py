"""Readers of a cycle closed early (issue 11's follow-up): the portal's days, the "late"
rule and the invoice document each see the parts of a cycle as billing it once."""

from datetime import date
from decimal import Decimal

import pytest

from billing.portal.selectors import daily_figures, subscription_invoices
from tests.billing.test_close_early import (  # noqa: F401 (the plan fixture)
    at,
    close,
    close_early,
    draft_of,
    plan,
    recompute,
    subscribe,
    use,
)

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
