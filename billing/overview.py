"""What the operator's admin shows beyond single records: this month's revenue and usage,
what needs attention, each customer's and subscription's spend, and the invoices an event
arrived too late for. Reads only.

Amounts stay in their currency: every figure is per currency, never added across them.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Count, DecimalField, Exists, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import Invoice, InvoiceLineItem, Subscription
from billing.selectors import CLOSED_STATUSES, MAY_HAVE_LATE_USAGE, is_late, line_window
from billing.tasks import recompute_requests
from metering.aggregation import matches
from metering.models import Customer, Event
from metering.selectors import events_of_unknown_customers, events_unmetered, usage_by_day

ZERO = Decimal(0)
TOP_CUSTOMERS = 10
ATTENTION_CAP = 100  # a count that could grow without bound stops here and reads "100+"
RECENT_EVENTS = timedelta(hours=24)
RECOMPUTE_GRACE = timedelta(minutes=1)


def month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _per_currency(rows, field: str) -> dict[str, Decimal]:
    return {row["currency"]: row[field] for row in rows if row[field] is not None}


# Revenue is what usage and fees earn: an invoice's subtotal, however it is paid. Prepaid
# credits applied do not lower it, and a purchase of credits is a prepayment, not revenue:
# counting it too would count the usage it pays twice.
BILLED = Q(invoice_type=Invoice.Type.SUBSCRIPTION)


def revenue_billed(*, start: datetime, end: datetime) -> dict[str, Decimal]:
    """Subtotals of the invoices finalized in ``[start, end)``, per currency."""
    invoices = Invoice.objects.filter(
        BILLED,
        invoice_status=Invoice.Status.FINALIZED,
        finalized_at__gte=start,
        finalized_at__lt=end,
    )
    return _per_currency(
        invoices.values("currency").annotate(amount=Sum("subtotal")).order_by("currency"),
        "amount",
    )


def revenue_proposed() -> dict[str, Decimal]:
    """Subtotals of the current drafts, per currency: what the open periods would bill now."""
    drafts = Invoice.objects.filter(invoice_status=Invoice.Status.DRAFT)
    return _per_currency(
        drafts.values("currency").annotate(amount=Sum("subtotal")).order_by("currency"),
        "amount",
    )


@dataclass(frozen=True)
class RevenueRow:
    name: str
    currency: str
    billed: Decimal
    proposed: Decimal


def _revenue_by(key, *, start: datetime, end: datetime) -> list[RevenueRow]:
    """Invoice lines finalized in ``[start, end)`` and on current drafts, summed by ``key``
    and currency: lines are already rounded, so their sums are the invoices' subtotals."""
    finalized = Q(
        invoice__invoice_type=Invoice.Type.SUBSCRIPTION,
        invoice__invoice_status=Invoice.Status.FINALIZED,
        invoice__finalized_at__gte=start,
        invoice__finalized_at__lt=end,
    )
    draft = Q(invoice__invoice_status=Invoice.Status.DRAFT)
    rows = (
        InvoiceLineItem.objects.filter(finalized | draft)
        .annotate(name=key)
        .values("name", "currency")
        .annotate(
            billed=Coalesce(Sum("amount", filter=finalized), Value(ZERO), output_field=_AMOUNT),
            proposed=Coalesce(Sum("amount", filter=draft), Value(ZERO), output_field=_AMOUNT),
        )
        .order_by("currency", "name")
    )
    return [RevenueRow(r["name"], r["currency"], r["billed"], r["proposed"]) for r in rows]


_AMOUNT = DecimalField(max_digits=28, decimal_places=12)


def revenue_by_plan(*, start: datetime, end: datetime) -> list[RevenueRow]:
    return _revenue_by(
        Coalesce(F("invoice__subscription__plan__name"), Value("(no plan)")), start=start, end=end
    )


def revenue_by_feature(*, start: datetime, end: datetime) -> list[RevenueRow]:
    """Usage lines by their meter's feature; fixed fees by their line's name."""
    return _revenue_by(Coalesce(F("meter__feature__name"), F("display_name")), start=start, end=end)


@dataclass(frozen=True)
class CustomerSpend:
    customer: Customer
    currency: str
    amount: Decimal


def top_customers(*, limit: int = TOP_CUSTOMERS) -> list[CustomerSpend]:
    """The customers whose current drafts total most, the top ``limit`` in each currency."""
    drafts = Invoice.objects.filter(invoice_status=Invoice.Status.DRAFT, subtotal__gt=0)
    currencies = drafts.order_by("currency").values_list("currency", flat=True).distinct()
    top = []
    for currency in currencies:
        rows = list(
            drafts.filter(currency=currency)
            .values("customer_id")
            .annotate(amount=Sum("subtotal"))
            .order_by("-amount", "customer_id")[:limit]
        )
        customers = Customer.objects.in_bulk([r["customer_id"] for r in rows])
        top += [CustomerSpend(customers[r["customer_id"]], currency, r["amount"]) for r in rows]
    return top


@dataclass(frozen=True)
class UsageChart:
    unit: str
    labels: list[str]
    series: list[tuple[str, list[Decimal]]]


def usage_charts(*, start: datetime, end: datetime) -> list[UsageChart]:
    """Usage per UTC day of ``[start, end)`` stacked by feature, one chart per unit (tokens
    stack with tokens, never with requests); from the hourly rollups only."""
    days = []
    day = start
    while day < end:
        days.append(day)
        day += timedelta(days=1)
    by_unit: dict[str, list[tuple[str, list[Decimal]]]] = {}
    for meter, per_day in sorted(usage_by_day(start=start, end=end), key=lambda m: str(m[0])):
        feature = meter.feature
        unit = feature.unit_plural or feature.name
        by_unit.setdefault(unit, []).append((feature.name, [per_day.get(d, ZERO) for d in days]))
    labels = [f"{d:%b} {d.day}" for d in days]
    return [UsageChart(unit, labels, sorted(series)) for unit, series in sorted(by_unit.items())]


@dataclass(frozen=True)
class Capped:
    value: int
    capped: bool  # there are more than ``value``

    def __str__(self):
        return f"{self.value}+" if self.capped else str(self.value)


def _capped(queryset) -> Capped:
    found = queryset[: ATTENTION_CAP + 1].count()
    return Capped(min(found, ATTENTION_CAP), found > ATTENTION_CAP)


def _counted(queryset) -> Capped:
    """All of a day's events are counted: with a LIMIT, the planner would scan the whole log
    hoping to stop early."""
    return Capped(queryset.count(), capped=False)


def arrived_since(*, since: datetime):
    """Events stored at or after ``since``: ids grow with arrival, so the newest stored
    before it bounds them, found walking back from the newest id."""
    before = (
        Event._base_manager.filter(ingested_at__lt=since)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    return Event._base_manager.filter(id__gt=before or 0)


def invoices_with_late_usage(*, now: datetime) -> Capped:
    """Closed invoices that an event of the last 24 hours' arrivals reached after their
    fence, within their window (from the subscription's start, as the report reads it):
    new late usage. The late-usage report keeps those whose meters count such an event,
    and shows older ones too."""
    late = arrived_since(since=now - RECENT_EVENTS).filter(
        external_customer_id=OuterRef("customer__external_id"),
        timestamp__gte=OuterRef("subscription__start_date"),  # meters that never reset
        timestamp__lt=OuterRef("period_end"),
        id__gt=OuterRef("usage_fence"),
    )
    invoices = Invoice.objects.filter(
        MAY_HAVE_LATE_USAGE,
        invoice_status__in=CLOSED_STATUSES,
        billing_reason__in=Invoice.CYCLE_REASONS,
    ).filter(Exists(late))
    return _counted(invoices)


def recent_events(*, now: datetime):
    return Event.objects.filter(timestamp__gte=now - RECENT_EVENTS, timestamp__lte=now)


def unknown_customer_events(*, now: datetime) -> Capped:
    """Events of the last 24 hours (by timestamp) whose customer does not exist yet."""
    return _counted(events_of_unknown_customers(recent_events(now=now)))


def unmetered_events(*, now: datetime) -> Capped:
    """Events of the last 24 hours (by timestamp) that no meter counts."""
    return _counted(events_unmetered(recent_events(now=now)))


def waiting_drafts(*, now: datetime):
    """Drafts with a recompute asked for and not done in the last minute: the worker is
    down or behind. A draft nobody sent usage for needs no recompute and is not counted."""
    return Invoice.objects.filter(
        invoice_status=Invoice.Status.DRAFT, subscription_id__in=recompute_requests.pending()
    ).filter(Q(last_computed_at__isnull=True) | Q(last_computed_at__lt=now - RECOMPUTE_GRACE))


def drafts_waiting(*, now: datetime) -> Capped:
    return _capped(waiting_drafts(now=now))


@dataclass(frozen=True)
class Overview:
    start: datetime
    end: datetime
    billed: dict[str, Decimal]
    proposed: dict[str, Decimal]
    by_plan: list[RevenueRow]
    by_feature: list[RevenueRow]
    top_customers: list[CustomerSpend]
    charts: list[UsageChart]
    late_invoices: Capped
    unknown_customer_events: Capped
    unmetered_events: Capped
    drafts_waiting: Capped


OVERVIEW_KEY = "tally:admin:overview"
OVERVIEW_SECONDS = 60


def overview_cached(*, now: datetime) -> Overview:
    """The overview as of at most ``OVERVIEW_SECONDS`` ago, from the shared cache: some of
    its reads take a while at scale, and a dashboard a minute old is still true enough."""
    found = cache.get(OVERVIEW_KEY)
    if found is None:
        found = overview(now=now)
        cache.set(OVERVIEW_KEY, found, OVERVIEW_SECONDS)
    return found


def overview(*, now: datetime) -> Overview:
    """The calendar month to ``now`` (UTC), and what needs the operator."""
    start = month_start(now)
    return Overview(
        start=start,
        end=now,
        billed=revenue_billed(start=start, end=now),
        proposed=revenue_proposed(),
        by_plan=revenue_by_plan(start=start, end=now),
        by_feature=revenue_by_feature(start=start, end=now),
        top_customers=top_customers(),
        charts=usage_charts(start=start, end=now),
        late_invoices=invoices_with_late_usage(now=now),
        unknown_customer_events=unknown_customer_events(now=now),
        unmetered_events=unmetered_events(now=now),
        drafts_waiting=drafts_waiting(now=now),
    )


# --- spend this period, for the customer and subscription lists --------------------------


def _drafts_of(**match):
    return Invoice.objects.filter(invoice_status=Invoice.Status.DRAFT, **match).order_by()


def subscriptions_with_spend(subscriptions):
    """``period_spend``: the subtotal of each subscription's current draft (its currency)."""
    draft = _drafts_of(
        subscription=OuterRef("pk"), period_start=OuterRef("current_period_start")
    ).values("subtotal")[:1]
    return subscriptions.annotate(period_spend=Subquery(draft, output_field=_AMOUNT))


def customers_with_spend(customers):
    """``period_spend`` in ``period_currency``: the customer's drafts in its first currency
    (alphabetically); ``period_currencies`` says how many currencies its drafts use."""
    drafts = _drafts_of(customer=OuterRef("pk"))
    first = drafts.order_by("currency").values("currency")[:1]
    in_first = (
        drafts.filter(currency=OuterRef("period_currency"))
        .values("customer")
        .annotate(spend=Sum("subtotal"))
        .values("spend")
    )
    currencies = drafts.values("customer").annotate(n=Count("currency", distinct=True)).values("n")
    return customers.annotate(
        period_currency=Subquery(first), period_currencies=Subquery(currencies)
    ).annotate(period_spend=Subquery(in_first, output_field=_AMOUNT))


# --- the invoices events arrived too late for -------------------------------------------


def late_invoices_of(*, events: list[Event]) -> dict[int, Invoice]:
    """For each event of a page that a closed invoice's meters count but its finalization
    did not read, that invoice (by event id); in two queries whatever the page holds."""
    if not events:
        return {}
    moments = [e.timestamp for e in events]
    invoices = (
        Invoice.objects.filter(
            MAY_HAVE_LATE_USAGE,
            invoice_status__in=CLOSED_STATUSES,
            billing_reason__in=Invoice.CYCLE_REASONS,
            customer__external_id__in={e.external_customer_id for e in events},
            usage_fence__lt=max(e.id for e in events),
            period_end__gt=min(moments),
            subscription__start_date__lte=max(moments),
        )
        .select_related("customer", "subscription")
        .prefetch_related("line_items")
        .order_by("period_start")
    )
    windows: dict[str, list] = {}
    for invoice in invoices:
        lines = [line for line in invoice.line_items.all() if line.meter_definition is not None]
        windows.setdefault(invoice.customer.external_id, []).append(
            (invoice, [line_window(invoice, line) for line in lines])
        )
    late = {}
    for event in events:
        for invoice, metered in windows.get(event.external_customer_id, []):
            if is_late(invoice=invoice, event_id=event.id) and any(
                window["start"] <= event.timestamp < window["end"]
                and matches(meter, event.event_name, event.properties)
                for meter, window in metered
            ):
                late[event.id] = invoice
                break
    return late


# --- one customer ------------------------------------------------------------------------

PAST_INVOICES = 12


@dataclass(frozen=True)
class CustomerBilling:
    subscriptions: list[Subscription]
    drafts: list[Invoice]  # the proposed invoices, with their lines
    past: list[Invoice]  # the latest closed ones, newest first
    more_past: bool


def customer_billing(*, customer: Customer) -> CustomerBilling:
    """A customer's subscriptions and invoices. Usage this period is each draft's lines:
    what the last recompute counted and priced, the figures the portal shows too."""
    drafts = (
        customer.invoices.filter(invoice_status=Invoice.Status.DRAFT)
        .select_related("subscription__plan")
        .prefetch_related("line_items__meter__feature")
        .order_by("period_start")
    )
    past = list(
        customer.invoices.exclude(invoice_status=Invoice.Status.DRAFT).order_by(
            "-period_start", "-created_at"
        )[: PAST_INVOICES + 1]
    )
    return CustomerBilling(
        subscriptions=list(customer.subscriptions.select_related("plan").order_by("-created_at")),
        drafts=list(drafts),
        past=past[:PAST_INVOICES],
        more_past=len(past) > PAST_INVOICES,
    )
