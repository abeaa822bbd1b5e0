"""Issue 11: a running period closed early bills its usage so far, and a draft from then to the
period's end bills the rest, so nothing sent later is late and nothing is billed twice."""

import itertools
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.db import transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import services
from billing.models import Invoice, InvoiceLineItem, Subscription
from billing.selectors import invoice_late_usage, late_usage
from billing.services import (
    InvalidTransition,
    invoice_propose,
    periods_close,
    subscription_cancel,
    subscription_create,
    subscription_period_close,
    subscription_period_close_early,
)
from catalog.models import Meter, Price
from metering.ingestion import events_ingest
from metering.models import Customer
from tests.billing.test_late_usage import finish, in_thread, parsed, require_postgresql
from tests.factories import MeterFactory, PlanFactory, PriceFactory, ingest

pytestmark = pytest.mark.django_db

CYCLE = Invoice.BillingReason.SUBSCRIPTION_CYCLE


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


P0 = (at(2028, 1, 31, 9, 30), at(2028, 2, 29, 9, 30))
P1 = (at(2028, 2, 29, 9, 30), at(2028, 3, 31, 9, 30))
P2 = (at(2028, 3, 31, 9, 30), at(2028, 4, 30, 9, 30))
SPLIT = at(2028, 2, 15, 12)


def fixed(plan, amount: str, cadence: str, name: str) -> Price:
    return PriceFactory(
        plan=plan,
        type=Price.Type.FIXED,
        billing_model=Price.BillingModel.FLAT_FEE,
        meter=None,
        divide_by=None,
        amount=Decimal(amount),
        invoice_cadence=cadence,
        display_name=name,
    )


@pytest.fixture
def plan():
    """$20 platform fee in ADVANCE, $5 support in ARREAR, $15 per started 1M tokens."""
    plan = PlanFactory()
    fixed(plan, "20", Price.Cadence.ADVANCE, "Platform")
    fixed(plan, "5", Price.Cadence.ARREAR, "Support")
    PriceFactory(plan=plan, meter=MeterFactory(), display_name="Tokens")
    return plan


@pytest.fixture
def wide_plan(plan):
    """Also: pro rata $0.33 per 1,000 tokens on a meter that never resets, $2 per unit of
    peak (MAX), $0.50 per unit of the latest gauge (LATEST), $1 per distinct user."""
    meters = {
        "Lifetime": MeterFactory(reset_usage=Meter.ResetUsage.NEVER),
        "Peak": MeterFactory(aggregation=Meter.Aggregation.MAX, field="peak"),
        "Gauge": MeterFactory(aggregation=Meter.Aggregation.LATEST, field="gauge"),
        "Users": MeterFactory(aggregation=Meter.Aggregation.COUNT_UNIQUE, field="user"),
    }
    PriceFactory(
        plan=plan,
        meter=meters["Lifetime"],
        amount=Decimal("0.33"),
        divide_by=1000,
        round=Price.Round.NONE,
        display_name="Lifetime",
    )
    for name, amount in [("Peak", "2"), ("Gauge", "0.5"), ("Users", "1")]:
        PriceFactory(
            plan=plan,
            meter=meters[name],
            billing_model=Price.BillingModel.FLAT_FEE,
            divide_by=None,
            amount=Decimal(amount),
            display_name=name,
        )
    return plan


def subscribe(plan, customer: str = "acme"):
    customer, _ = Customer.objects.get_or_create(external_id=customer, name=customer)
    with time_machine.travel(P0[0], tick=False):
        return subscription_create(customer=customer, plan=plan, start_date=P0[0])


def use(customer: str, n: int, moment: datetime, tokens: int, peak=1, gauge=1, user="u") -> None:
    ingest(
        {
            "event_id": f"{customer}-{n}",
            "event_name": "tokens",
            "external_customer_id": customer,
            "timestamp": moment.isoformat(),
            "properties": {"tokens": tokens, "peak": peak, "gauge": gauge, "user": user},
        },
        now=moment,
    )


def close_early(subscription, moment=SPLIT) -> Invoice:
    with time_machine.travel(moment, tick=False):
        return subscription_period_close_early(subscription=subscription, now=moment)


def close(subscription, moment) -> Invoice | None:
    with time_machine.travel(moment, tick=False):
        return subscription_period_close(subscription_id=subscription.pk, now=moment)


def draft_of(subscription) -> Invoice:
    return Invoice.objects.get(subscription=subscription, invoice_status="DRAFT")


def recompute(subscription) -> Invoice:
    """The current draft, recomputed: the subscription's period moved since it was loaded."""
    subscription.refresh_from_db()
    return invoice_propose(subscription=subscription)


def lines(invoice) -> list[tuple]:
    """(name, amount, billed before, line period) for each line, in price order."""
    return [
        (li.display_name, li.amount, li.billed_before, (li.period_start, li.period_end))
        for li in invoice.line_items.order_by("price__created_at", "price_id")
    ]


def test_closing_early_bills_usage_so_far_and_opens_a_draft_to_the_boundary(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)

    early = close_early(sub)

    assert early.invoice_status == "FINALIZED" and early.invoice_number == "INV-202802-00001"
    assert (early.period_start, early.period_end) == (P0[0], SPLIT)
    assert early.closed_early and early.finalized_at == SPLIT
    # Usage so far only: the fixed fees are the cycle's, billed when it ends.
    assert lines(early) == [("Tokens", Decimal("45.00"), Decimal(0), (P0[0], SPLIT))]
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == (SPLIT, P0[1])
    draft = draft_of(sub)
    assert (draft.period_start, draft.period_end, draft.cycle_start) == (SPLIT, P0[1], P0[0])
    assert lines(draft) == [
        ("Platform", Decimal("20.00"), Decimal(0), P1),
        ("Support", Decimal("5.00"), Decimal(0), P0),
        ("Tokens", Decimal("0.00"), Decimal("45.00"), P0),  # 3 packages, all billed already
    ]


def test_events_after_the_early_close_land_on_the_new_draft_not_late(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    early = close_early(sub)

    use("acme", 2, at(2028, 2, 20), 1_000_000)
    draft = recompute(sub)

    tokens = draft.line_items.get(display_name="Tokens")
    assert (tokens.quantity, tokens.amount, tokens.event_count) == (3_500_000, Decimal(15), 2)
    assert late_usage() == [] and invoice_late_usage(invoice=early).event_count == 0
    close(sub, P0[1])
    assert late_usage() == []


def test_the_boundary_closes_the_remainder_and_bills_the_next_advance_fee_once(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    close_early(sub)
    use("acme", 2, at(2028, 2, 20), 1_000_000)

    with time_machine.travel(P0[1], tick=False):
        assert periods_close(now=P0[1]) == 1

    remainder = Invoice.objects.get(subscription=sub, period_start=SPLIT)
    assert remainder.invoice_status == "FINALIZED" and remainder.total == Decimal("40.00")
    sub.refresh_from_db()
    assert (sub.current_period_start, sub.current_period_end) == P1
    next_draft = draft_of(sub)
    assert next_draft.cycle_start is None and not next_draft.closed_early
    assert lines(next_draft)[:2] == [
        ("Platform", Decimal("20.00"), Decimal(0), P2),
        ("Support", Decimal("5.00"), Decimal(0), P1),
    ]
    advance = InvoiceLineItem.objects.filter(
        invoice__subscription=sub, invoice_cadence="ADVANCE"
    ).exclude(invoice__invoice_status="DRAFT")
    assert sorted(advance.values_list("period_start", "period_end")) == [P0, P1]
    cycle = Invoice.objects.filter(subscription=sub, billing_reason=CYCLE, period_end__lte=P0[1])
    assert cycle.aggregate(total=Sum("total"))["total"] == Decimal("85.00")  # 20 + 5 + 4 × 15


def test_a_second_early_close_counts_both_earlier_parts(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 1_500_000)
    first = close_early(sub)
    use("acme", 2, at(2028, 2, 16), 1_000_000)
    second = close_early(sub, at(2028, 2, 20))
    use("acme", 3, at(2028, 2, 21), 1_000_000)
    last = close(sub, P0[1])

    assert [first.total, second.total, last.total] == [
        Decimal(30),  # 2 packages of 1.5M
        Decimal(15),  # 3 packages of 2.5M, less 30
        Decimal(40),  # 4 packages of 3.5M less 45, and the fixed fees
    ]
    assert second.cycle_start == last.cycle_start == P0[0]


def test_voiding_the_early_part_leaves_its_usage_to_the_remainder(plan):
    from billing.services import invoice_void

    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    invoice_void(invoice=close_early(sub))
    draft = recompute(sub)
    assert draft.line_items.get(display_name="Tokens").amount == Decimal(45)


def test_cancelling_the_remainder_immediately_bills_the_arrear_fee_once(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    close_early(sub)
    with time_machine.travel(at(2028, 2, 20), tick=False):
        subscription_cancel(subscription=sub, cancellation_type="immediate")
    remainder = Invoice.objects.get(subscription=sub, period_start=SPLIT)
    assert lines(remainder) == [
        ("Support", Decimal("5.00"), Decimal(0), (P0[0], at(2028, 2, 20))),
        ("Tokens", Decimal("0.00"), Decimal("45.00"), (P0[0], at(2028, 2, 20))),
    ]


@pytest.mark.parametrize(
    ("moment", "reason"),
    [(P0[0], "is running"), (P0[1], "is running"), (P0[0] - timedelta(days=1), "is running")],
)
def test_only_a_running_period_closes_early(plan, moment, reason):
    sub = subscribe(plan)
    with pytest.raises(InvalidTransition, match=reason):
        subscription_period_close_early(subscription=sub, now=moment)
    assert Invoice.objects.filter(subscription=sub, closed_early=True).count() == 0


def test_a_cancelled_subscription_or_a_finalized_draft_does_not_close_early(plan):
    from billing.services import invoice_finalize

    sub = subscribe(plan)
    invoice_finalize(invoice=draft_of(sub))
    with pytest.raises(InvalidTransition, match="already FINALIZED"):
        close_early(sub)
    subscription_cancel(subscription=sub, cancellation_type="immediate")
    with pytest.raises(InvalidTransition, match="active subscription"):
        close_early(sub)


# Split or not, the cycle bills the same, to the cent.

SECONDS = int((P0[1] - P0[0]).total_seconds())
events = st.lists(
    st.tuples(
        st.integers(0, SECONDS - 1),  # when, from the period's start
        st.integers(0, 3_000_000),  # tokens
        st.integers(0, 50),  # peak
        st.integers(0, 50),  # gauge
        st.sampled_from("abc"),  # user
    ),
    max_size=6,
)
runs = itertools.count()


def _cycle_billed(subscription) -> dict[str, Decimal]:
    """Per price, what the closed invoices of the first cycle billed."""
    rows = (
        InvoiceLineItem.objects.filter(
            invoice__subscription=subscription,
            invoice__billing_reason=CYCLE,
            invoice__period_end__lte=P0[1],
        )
        .exclude(invoice__invoice_status="DRAFT")
        .values_list("display_name")
        .annotate(billed=Sum("amount"))
    )
    return dict(rows)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(split=st.integers(1, SECONDS - 1), stream=events)
def test_a_split_cycle_bills_what_the_unsplit_close_bills(wide_plan, split, stream):
    run = next(runs)
    split_at = P0[0] + timedelta(seconds=split)
    whole, parted = subscribe(wide_plan, f"whole-{run}"), subscribe(wide_plan, f"split-{run}")
    stream = sorted(stream)
    before = [e for e in stream if e[0] < split]
    after = [e for e in stream if e[0] >= split]

    def send(customer, batch, first):
        for n, (offset, tokens, peak, gauge, user) in enumerate(batch, start=first):
            moment = P0[0] + timedelta(seconds=offset)
            use(customer, n, moment, tokens, peak=peak, gauge=gauge, user=user)

    for customer in (whole.customer.external_id, parted.customer.external_id):
        send(customer, before, 0)
    close_early(parted, split_at)
    for customer in (whole.customer.external_id, parted.customer.external_id):
        send(customer, after, len(before))
    close(whole, P0[1])
    close(parted, P0[1])

    assert _cycle_billed(parted) == _cycle_billed(whole)
    next_fees = InvoiceLineItem.objects.filter(
        invoice__subscription=parted, invoice_cadence="ADVANCE", period_start=P1[0]
    )
    assert next_fees.exclude(invoice__invoice_status="DRAFT").count() == 1


# An ingest racing the early close is billed on one part or the other, never lost.


@pytest.fixture
def running(plan):
    """acme in a period that began a day ago; the early close happens now."""
    day_ago = timezone.now() - timedelta(days=1)
    customer = Customer.objects.create(external_id="acme", name="Acme")
    return subscription_create(
        customer=customer, plan=plan, start_date=day_ago, billing_anchor=day_ago
    )


def event(n: int, tokens: int, *, ago=timedelta(hours=1)) -> dict:
    return {
        "event_id": f"e-{n}",
        "event_name": "tokens",
        "external_customer_id": "acme",
        "timestamp": (timezone.now() - ago).isoformat(),
        "properties": {"tokens": tokens},
    }


def tokens_of(invoice) -> Decimal:
    return invoice.line_items.get(display_name="Tokens").quantity


@pytest.mark.django_db(transaction=True)
def test_ingest_in_flight_when_the_early_close_starts_is_on_the_early_invoice(running):
    require_postgresql()
    ingest(event(1, 10))
    stored, release = threading.Event(), threading.Event()

    def slow_ingest():
        with transaction.atomic():
            events_ingest(events=parsed(event(2, 20)))
            stored.set()
            release.wait(10)  # inserted, not committed

    ingesting = in_thread(slow_ingest)
    assert stored.wait(10)
    now = timezone.now()
    closing = in_thread(lambda: subscription_period_close_early(subscription=running, now=now))
    time.sleep(0.5)
    assert closing.is_alive(), f"the early close must wait for ingest in flight: {closing.outcome}"
    release.set()
    finish(ingesting)
    early = finish(closing)
    assert tokens_of(early) == 30
    assert tokens_of(recompute(running)) == 30  # the cycle so far, all billed
    assert recompute(running).line_items.get(display_name="Tokens").billed_before == early.total


@pytest.mark.django_db(transaction=True)
def test_ingest_that_starts_while_the_early_close_reads_is_on_the_new_draft(running):
    require_postgresql()
    ingest(event(1, 1_000_000))
    fenced, release = threading.Event(), threading.Event()
    now = timezone.now()

    def slow_close():
        with transaction.atomic():
            early = subscription_period_close_early(subscription=running, now=now)
            fenced.set()
            release.wait(10)  # read and fenced, not committed
        return early

    closing = in_thread(slow_close)
    assert fenced.wait(10)
    # One event from before the split, one after it.
    ingesting = in_thread(
        lambda: events_ingest(
            events=parsed(event(2, 500_000), event(3, 700_000, ago=-timedelta(seconds=1)))
        )
    )
    time.sleep(0.5)
    assert ingesting.is_alive(), "the customer's ingest must wait for the early close to commit"
    release.set()
    early = finish(closing)
    finish(ingesting)
    assert (tokens_of(early), early.total) == (1_000_000, Decimal(15))
    draft = recompute(running)
    tokens = draft.line_items.get(display_name="Tokens")
    assert (tokens.quantity, tokens.amount) == (2_200_000, Decimal(30))  # 3 packages, less 1
    assert invoice_late_usage(invoice=early).event_count == 0


# The admin's Finalize on a draft whose period is running.


def act(client, *invoices, post=None):
    data = {"action": "finalize", "_selected_action": [i.pk for i in invoices]}
    if post:
        data["post"] = post
    return client.post(reverse("admin:billing_invoice_changelist"), data, follow=True)


def messages_of(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def test_finalize_on_a_running_period_says_what_happens_and_offers_both(admin_client, running):
    ingest(event(1, 10, ago=-timedelta(minutes=2)))  # already stored, after now
    draft = draft_of(running)

    page = act(admin_client, draft)

    html = re.sub(r"\s+", " ", page.content.decode())
    assert page.status_code == 200
    assert "1 event after now would be late usage and not billed" in html
    assert ">Close the period now and open the next draft from here</button>" in html
    assert '<button type="submit" name="post" value="yes">Finalize anyway</button>' in html
    assert Invoice.objects.get(pk=draft.pk).invoice_status == "DRAFT"


def test_close_early_button_closes_the_period_and_opens_the_next_draft(admin_client, running):
    draft = draft_of(running)

    done = act(admin_client, draft, post="close_early")

    early = Invoice.objects.get(pk=draft.pk)
    assert early.invoice_status == "SKIPPED" and early.closed_early  # no usage yet: $0
    assert messages_of(done) == [("success", f"Finalized 1 invoice(s): {early.pk} (SKIPPED).")]
    fresh = draft_of(running)
    assert fresh.period_start == early.period_end and fresh.period_end == draft.period_end


def test_finalize_anyway_finalizes_the_whole_running_period(admin_client, running):
    ingest(event(1, 10))
    draft = draft_of(running)

    act(admin_client, draft, post="yes")

    invoice = Invoice.objects.get(pk=draft.pk)
    assert invoice.invoice_status == "FINALIZED" and not invoice.closed_early
    assert invoice.period_end == draft.period_end
    assert not Invoice.objects.filter(subscription=running, invoice_status="DRAFT").exists()


def test_a_draft_whose_period_ended_finalizes_as_before(admin_client, plan):
    customer = Customer.objects.create(external_id="acme", name="Acme")
    long_ago = timezone.now() - timedelta(days=40)
    with time_machine.travel(long_ago, tick=False):
        sub = subscription_create(customer=customer, plan=plan, start_date=long_ago)
    draft = draft_of(sub)
    assert draft.period_end < timezone.now()

    page = act(admin_client, draft)

    html = page.content.decode()
    assert "Yes, I’m sure" in html and "Finalize anyway" not in html


def test_the_preview_of_the_remainder_is_its_draft(running):
    from rest_framework.test import APIClient

    from metering.services import api_key_create

    ingest(event(1, 2_500_000))
    early = subscription_period_close_early(subscription=running, now=timezone.now())
    ingest(event(2, 1_000_000, ago=-timedelta(seconds=1)))
    draft = recompute(running)
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=api_key_create(name="t")[1])

    preview = client.post("/v1/invoices/preview", {"subscription_id": running.pk}, format="json")

    lines = preview.json()["line_items"]
    by_name = {line["display_name"]: Decimal(line["amount"]) for line in lines}
    assert by_name == {li.display_name: li.amount for li in draft.line_items.all()}
    assert by_name["Tokens"] == Decimal(15) and early.total == Decimal(45)


def test_usage_of_the_early_part_that_arrives_later_is_billed_or_late_once(plan):
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    early = close_early(sub)
    with time_machine.travel(at(2028, 2, 16), tick=False):
        use("acme", 2, at(2028, 2, 11), 1_000_000)  # before the split, stored after it

    tokens = recompute(sub).line_items.get(display_name="Tokens")
    assert (tokens.quantity, tokens.amount) == (3_500_000, Decimal(15))  # on the remainder
    assert invoice_late_usage(invoice=early).event_count == 0

    remainder = close(sub, P0[1])
    with time_machine.travel(at(2028, 3, 1), tick=False):
        use("acme", 3, at(2028, 2, 12), 600_000)  # after both parts closed
    [report] = late_usage()
    assert report.invoice == remainder  # once, on the part that read the whole cycle last
    [line] = report.lines
    assert (line.event_count, line.quantity, line.amount) == (1, 600_000, Decimal(15))


def test_the_confirmation_names_lines_whose_value_does_not_add_up(admin_client, wide_plan):
    day_ago = timezone.now() - timedelta(days=1)
    customer = Customer.objects.create(external_id="acme", name="Acme")
    sub = subscription_create(
        customer=customer, plan=wide_plan, start_date=day_ago, billing_anchor=day_ago
    )

    html = re.sub(r"\s+", " ", act(admin_client, draft_of(sub)).content.decode())

    assert "1 draft bills a period that has not ended yet" in html
    assert "Closing early: Peak, Gauge, Users are a maximum, latest value" in html
    assert "the period's total does not change" in html


def test_a_recompute_that_read_the_subscription_before_the_early_close_opens_no_second_draft(
    plan,
):
    sub = subscribe(plan)
    read_before = Subscription.objects.get(pk=sub.pk)  # as a recompute task had loaded it
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    close_early(sub)

    draft = invoice_propose(subscription=read_before)

    assert (draft.period_start, draft.period_end) == (SPLIT, P0[1])
    assert Invoice.objects.filter(subscription=sub, invoice_status="DRAFT").count() == 1


@pytest.mark.parametrize("ending", ["close early", "cancel now"])
def test_a_propose_whose_period_read_preceded_the_commit_leaves_no_stray_draft(
    plan, monkeypatch, ending
):
    """The recompute read the period, then the early close (or an immediate cancel)
    committed, then the recompute went on to upsert a draft for the period it had read."""
    sub = subscribe(plan)
    use("acme", 1, at(2028, 2, 10), 2_500_000)
    stale = services._current_period(sub)
    if ending == "close early":
        close_early(sub)
    else:
        with time_machine.travel(SPLIT, tick=False):
            subscription_cancel(subscription=sub, cancellation_type="immediate")
    reads = iter([stale])
    real = services._current_period
    monkeypatch.setattr(services, "_current_period", lambda s: next(reads, None) or real(s))

    with time_machine.travel(SPLIT + timedelta(minutes=1), tick=False):
        proposed = invoice_propose(subscription=sub)

    assert not Invoice.objects.filter(
        subscription=sub,
        period_start=stale[0],
        period_end=stale[1],
        billing_reason=Invoice.BillingReason.SUBSCRIPTION_CYCLE,
    ).exists()
    drafts = Invoice.objects.filter(subscription=sub, invoice_status="DRAFT")
    if ending == "close early":
        assert list(drafts) == [proposed]
        assert (proposed.period_start, proposed.period_end) == (SPLIT, P0[1])
    else:
        assert not drafts.exists()
