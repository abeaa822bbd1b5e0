"""What the customer portal shows. Every read takes the customer: nothing crosses customers."""

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import F, Max, Q, Sum

from billing.models import Budget, Invoice, InvoiceLineItem, Subscription, Wallet, WalletTransaction
from billing.periods import usage_start
from billing.selectors import is_late, was_read
from billing.wallet_selectors import ledger_entries
from billing.wallets import Balance, wallet_balance
from catalog import names, pricing
from catalog.models import Feature, Meter, Price
from catalog.money import format_money, format_quantity, round_money
from catalog.selectors import terms_summary
from metering.aggregation import Partial, matches, property_text, quantity
from metering.matching import events_feeding
from metering.models import Customer, Event
from metering.selectors import usage_partials, usage_partials_after


@dataclass(frozen=True)
class FeatureUsage:
    name: str
    quantity: Decimal
    unit: str
    price: str
    amount: Decimal
    currency: str


def portal_subscription(customer: Customer) -> Subscription | None:
    subscriptions = customer.subscriptions.select_related("plan")
    return (
        subscriptions.filter(status=Subscription.Status.ACTIVE).order_by("-created_at").first()
        or subscriptions.order_by("-created_at").first()
    )


def proposed_invoice(subscription: Subscription | None) -> Invoice | None:
    if subscription is None:
        return None
    return (
        Invoice.objects.filter(
            subscription=subscription,
            period_start=subscription.current_period_start,
            invoice_status=Invoice.Status.DRAFT,
        )
        .prefetch_related("line_items__meter__feature")
        .first()
    )


def feature_usage(invoice: Invoice) -> list[FeatureUsage]:
    """Each usage line of the proposed invoice."""
    return [
        FeatureUsage(
            name=line.meter.feature.name,
            quantity=line.quantity,
            unit=line.meter.feature.unit_plural,
            price=line_price_summary(line),
            amount=line.amount,
            currency=line.currency,
        )
        for line in invoice.line_items.all()
        if line.meter is not None
    ]


def line_price_summary(line: InvoiceLineItem) -> str:
    """The line's price as it was when the line was priced."""
    return terms_summary(
        line.priced_terms(),
        currency=line.currency,
        # A purchase of credits (no catalog price) is priced per credit, not per period.
        fixed=line.price_type == Price.Type.FIXED and line.price_id is not None,
        unit_singular=line.unit_singular,
        unit_plural=line.unit_plural,
    )


@dataclass(frozen=True)
class InvoiceRow:
    name: str
    quantity: Decimal
    packages: Decimal | None
    unit_price: Decimal
    unit: str
    amount: Decimal
    price: str
    event_count: int
    period_start: datetime
    period_end: datetime
    cycle_note: str = ""  # on a part continuing a cycle closed early: how its amount comes


def invoice_rows(invoice: Invoice) -> list[InvoiceRow]:
    """The invoice's lines as they were priced: from each line's snapshot only."""
    rows = []
    earlier = None
    for line in invoice.line_items.all():
        terms = line.priced_terms()
        unit = ""
        if terms.billing_model == pricing.PACKAGE:
            unit = f"per {Decimal(terms.divide_by or 1):,}"
        note = ""
        if line.billed_before:
            earlier = earlier if earlier is not None else earlier_parts(invoice)
            note = cycle_note(line, earlier=earlier)
        rows.append(
            InvoiceRow(
                name=line.display_name,
                quantity=line.quantity,
                packages=line.packages,
                unit_price=terms.amount,
                unit=unit,
                amount=line.amount,
                price=line_price_summary(line),
                event_count=line.event_count,
                period_start=line.period_start,
                period_end=line.period_end,
                cycle_note=note,
            )
        )
    return rows


def earlier_parts(invoice: Invoice) -> list[Invoice]:
    """The parts of the invoice's cycle closed early before it that billed (what a line's
    ``billed_before`` adds up)."""
    if invoice.cycle_start is None:
        return []
    return list(
        Invoice.objects.filter(
            subscription_id=invoice.subscription_id,
            billing_reason__in=Invoice.CYCLE_REASONS,
            closed_early=True,
            invoice_status__in=(Invoice.Status.FINALIZED, Invoice.Status.SKIPPED),
            period_start__gte=invoice.cycle_start,
            period_end__lte=invoice.period_start,
        ).order_by("period_start")
    )


def cycle_note(line: InvoiceLineItem, *, earlier: list[Invoice]) -> str:
    """``Cycle Jan 31 – Feb 29: 3,500,000 tokens, $60.00, less $45.00 billed on INV-1``: the
    line prices the whole cycle's usage; its amount is that less what earlier parts billed."""
    start, end = line.period_start.astimezone(UTC), line.period_end.astimezone(UTC)
    unit = line.unit_singular if line.quantity == 1 else line.unit_plural
    quantity = " ".join(filter(None, [format_quantity(line.quantity), unit]))
    whole = format_money(line.amount + line.billed_before, line.currency)
    less = format_money(line.billed_before, line.currency)
    on = ", ".join(invoice_label(i) for i in earlier) or "earlier parts"
    return (
        f"Cycle {start:%b} {start.day} – {end:%b} {end.day}: {quantity}, {whole}, "
        f"less {less} billed on {on}"
    )


def customer_invoices(customer: Customer):
    return customer.invoices.exclude(invoice_status=Invoice.Status.SKIPPED).order_by(
        "-period_start"
    )


def portal_meters(customer: Customer) -> list[Meter]:
    """The meters of the customer's plans, for the events filter."""
    return list(
        Meter.objects.filter(prices__plan__subscriptions__customer=customer)
        .select_related("feature")
        .distinct()
        .order_by("feature__name")
    )


def customer_events(
    customer: Customer,
    *,
    meter: Meter | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
):
    events = Event.objects.filter(external_customer_id=customer.external_id)
    if meter is not None:
        events = events_feeding(events, meter=meter)
    if start is not None:
        events = events.filter(timestamp__gte=start)
    if end is not None:
        events = events.filter(timestamp__lt=end)
    return events.order_by("-timestamp", "-id")


def property_display(value) -> str:
    """A property as the events page shows it: JSON numbers with thousands separators,
    strings as sent (an id such as ``"12345"`` stays as it is), the rest as JSON."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_quantity(Decimal(repr(value)) if isinstance(value, float) else value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def property_csv(value) -> str:
    """A property in a CSV cell: numbers written out in full as filters compare them,
    strings as sent, null, objects and arrays as JSON."""
    text = property_text(value)
    return json.dumps(value, ensure_ascii=False) if text is None else text


# --- whether an event is billed -------------------------------------------------------

NO_METER = "no meter counts it"
OUTSIDE_PERIOD = "outside the billing period"
VOIDED = "its invoice was voided"


@dataclass(frozen=True)
class Billed:
    feature: str
    invoice: Invoice

    def __str__(self):
        if self.invoice.is_draft:
            return f"{self.feature} (proposed invoice)"
        return f"{self.feature} on {invoice_label(self.invoice)}"


@dataclass(frozen=True)
class EventMark:
    """Where an event is billed, or why it is not."""

    billed: tuple[Billed, ...] = ()
    reason: str = ""

    def __str__(self):
        if self.billed:
            return "billed: " + "; ".join(str(b) for b in self.billed)
        return f"not billed: {self.reason}"


def invoice_label(invoice: Invoice) -> str:
    if invoice.invoice_number:
        return invoice.invoice_number
    return f"the {invoice.invoice_status.lower()} invoice of {invoice.period_start:%Y-%m-%d}"


@dataclass(frozen=True)
class UsageLine:
    """A feature an invoice bills by a meter, and from when it counts events."""

    name: str
    meter: Meter
    start: datetime


@dataclass(frozen=True)
class BillingFacts:
    """What bills a customer's usage: each subscription's plan meters, and its invoices with
    the usage lines each bills (the plan's current meters for a draft, the lines' snapshots
    once closed). Loaded once; then each event is marked in Python."""

    plan_meters: list[Meter]
    invoices: list[tuple[Invoice, list[UsageLine]]]


def billing_facts(*, customer: Customer, since: datetime | None = None) -> BillingFacts:
    """``since`` skips closed invoices of periods that ended before it."""
    subscriptions = {s.pk: s for s in customer.subscriptions.all()}
    prices = (
        Price.objects.filter(
            plan_id__in={s.plan_id for s in subscriptions.values()}, type=Price.Type.USAGE
        )
        .exclude(meter=None)
        .select_related("meter__feature")
    )
    invoices = Invoice.objects.filter(
        subscription_id__in=subscriptions,
        billing_reason__in=Invoice.CYCLE_REASONS,
    )
    if since is not None:
        invoices = invoices.filter(Q(period_end__gt=since) | Q(invoice_status=Invoice.Status.DRAFT))
    invoices = invoices.prefetch_related("line_items").order_by("period_start")
    return BillingFacts(
        plan_meters=[p.meter for p in prices],
        invoices=[
            (i, _usage_lines(i, subscription=subscriptions[i.subscription_id], prices=prices))
            for i in invoices
        ],
    )


def _usage_lines(invoice: Invoice, *, subscription: Subscription, prices) -> list[UsageLine]:
    if not invoice.is_draft:
        return [
            UsageLine(
                name=line.display_name,
                meter=meter,
                start=usage_start(
                    reset_usage=meter.reset_usage,
                    subscription_start=subscription.start_date,
                    period_start=line.period_start,
                ),
            )
            for line in invoice.line_items.all()
            if (meter := line.metered_by()) is not None
        ]
    return [  # the names and windows the draft's lines get when it is recomputed
        UsageLine(
            name=p.display_name or p.meter.feature.name,
            meter=p.meter,
            start=usage_start(  # a part continuing a cycle counts it from its start
                reset_usage=p.meter.reset_usage,
                subscription_start=subscription.start_date,
                period_start=invoice.cycle_start or invoice.period_start,
            ),
        )
        for p in prices
        if p.plan_id == subscription.plan_id and p.currency == subscription.currency
    ]


def event_mark(*, facts: BillingFacts, event: Event) -> EventMark:
    """Billed on every invoice line whose meter it feeds within the line's window; otherwise
    the first reason that holds: late, voided, no meter counts it, outside the period.

    The parts of a cycle closed early each count the cycle's usage from its start; an event
    is billed on the first part that counted it only (a later part prices it again but takes
    off what the earlier parts billed). A part closed early before the event was stored did
    not count it: the next part bills it, so it is not late there."""

    def feeds(meter) -> bool:
        return matches(meter, event.event_name, event.properties)

    moment = event.timestamp
    billed, late_on, voided, unmetered = [], None, False, False
    cycles_billed = set()
    for invoice, lines in facts.invoices:
        fed = [
            line
            for line in lines
            if line.start <= moment < invoice.period_end and feeds(line.meter)
        ]
        cycle = (invoice.subscription_id, invoice.cycle_start)
        if not fed:
            unmetered = unmetered or invoice.period_start <= moment < invoice.period_end
        elif invoice.invoice_status == Invoice.Status.VOIDED:
            voided = True
        elif is_late(invoice=invoice, event_id=event.id):
            late_on = late_on or invoice
        elif cycle in cycles_billed or not was_read(invoice=invoice, event_id=event.id):
            continue
        else:
            names = sorted(line.name for line in fed)
            billed += [Billed(feature=name, invoice=invoice) for name in names]
            if invoice.cycle_start is not None:
                cycles_billed.add(cycle)
    if billed:
        return EventMark(billed=tuple(billed))
    if late_on is not None:
        return EventMark(reason=f"late: it arrived after {invoice_label(late_on)} was closed")
    if voided:
        return EventMark(reason=VOIDED)
    if unmetered or not any(feeds(meter) for meter in facts.plan_meters):
        return EventMark(reason=NO_METER)
    return EventMark(reason=OUTSIDE_PERIOD)


def event_marks(*, customer: Customer, events: list[Event]) -> list[EventMark]:
    """A mark for each of a page of events, in a few queries whatever the page holds."""
    if not events:
        return []
    facts = billing_facts(customer=customer, since=min(e.timestamp for e in events))
    return [event_mark(facts=facts, event=event) for event in events]


# --- cost and usage per day -------------------------------------------------------------

DAY = timedelta(days=1)


def day_of(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass(frozen=True)
class LineDays:
    """One usage line's figures per UTC day: what the day added to the line's amount, and
    the meter's quantity over the day's events."""

    name: str
    cost: dict[date, Decimal]
    usage: dict[date, Decimal]
    billed: bool  # the days add up to the line as billed (false: usage arrived since)


def _reading_meter(line: InvoiceLineItem) -> Meter:
    """The meter as the line was priced: the saved one while its definition is unchanged
    (it has rollups), else the line's snapshot, read from raw events."""
    if line.meter is not None and line.meter.definition() == line.meter_definition:
        return line.meter
    return line.metered_by()


def line_days(*, invoice: Invoice, line: InvoiceLineItem, subscription: Subscription) -> LineDays:
    """A day's cost is cost(usage through the day) − cost(usage through the day before),
    each priced by the line's own terms and rounded as the line is, so the days of a period
    add up to the line's amount to the cent. Usage before the period (a meter that never
    resets) counts on its first day.

    A part continuing a cycle closed early prices the whole cycle's usage less what the
    earlier parts billed (``billed_before``): its days are its own period's only, and its
    first day carries cost(the cycle's usage through that day) − billed_before, so the days
    of all the parts add up to what they billed. The earlier parts' usage is theirs to show.
    """
    meter = _reading_meter(line)
    terms = line.priced_terms()
    start = usage_start(
        reset_usage=meter.reset_usage,
        subscription_start=subscription.start_date,
        period_start=line.period_start,
    )
    own_start = max(invoice.period_start, line.period_start)
    continues = line.period_start < own_start  # a later part of a cycle closed early
    first = day_of(own_start)
    reading = dict(
        meter=meter,
        external_customer_id=invoice.customer.external_id,
        start=start,
        end=line.period_end,
    )
    by_day: dict[date, Partial] = {}
    carried = Partial()  # the earlier parts' usage: priced on the first day, not shown
    if continues:
        by_day[first] = Partial()
        carried = _merged(p for _, p in usage_partials(**reading | {"end": own_start}))
        reading["start"] = own_start
    for moment, partial in usage_partials(**reading, window_size="DAY"):
        by_day.setdefault(max(day_of(moment), first), Partial()).merge(partial)
    reading["start"] = start

    def total() -> Decimal:
        everything = _merged([carried, *by_day.values()])
        return _as_stored(quantity(meter, everything, start, line.period_end))

    if total() != line.quantity and _takes_out_late_usage(invoice, meter):
        # Only when the reading moved since closing: late usage is rare, and reading it
        # scans raw events.
        for moment, late in usage_partials_after(**reading, after_id=invoice.usage_fence).items():
            if continues and moment < own_start:  # hourly: its usage is not shown, its cost is
                carried.merge(_negated(late))
            else:
                by_day.setdefault(max(day_of(moment), first), Partial()).merge(_negated(late))
    running, before = _merged([carried]), line.billed_before
    cost, usage = {}, {}
    for day, partial in sorted(by_day.items()):
        running.merge(partial)
        through = pricing.amount_for(terms, quantity(meter, running, start, line.period_end))
        through = round_money(through, line.currency)
        cost[day], before = through - before, through
        usage[day] = quantity(meter, partial, start, line.period_end)
    return LineDays(name=line.display_name, cost=cost, usage=usage, billed=total() == line.quantity)


def _as_stored(value: Decimal) -> Decimal:
    """A quantity as an invoice line stores it (12 decimal places)."""
    return value.quantize(Decimal("1e-12"))


def _merged(partials) -> Partial:
    total = Partial()
    for partial in partials:
        total.merge(partial)
    return total


def _takes_out_late_usage(invoice: Invoice, meter: Meter) -> bool:
    """A closed invoice's late events can be taken out of an additive reading; a MAX,
    LATEST, AVG or COUNT_UNIQUE reading cannot be undone, and its days say so."""
    return (
        not invoice.is_draft
        and invoice.usage_fence is not None
        and meter.aggregation in names.ADDITIVE_AGGREGATIONS
    )


def _negated(partial: Partial) -> Partial:
    """What takes ``partial`` back out of an additive aggregation."""
    return Partial(
        count=-partial.count, total=-partial.total, value_time_total=-partial.value_time_total
    )


@dataclass(frozen=True)
class DailyFigures:
    days: list[date]
    currency: str
    cost: list[tuple[str, list[Decimal]]]  # one series a feature
    usage: list[tuple[str, list[Decimal]]]
    billed: bool  # every day adds up to the invoices as they stand

    @property
    def total_cost(self) -> Decimal:
        return sum((sum(values, Decimal(0)) for _, values in self.cost), Decimal(0))


def daily_figures(
    *, subscription: Subscription, invoices: list[Invoice], first: date, last: date
) -> DailyFigures:
    """Cost and usage per day from ``first`` to ``last`` (inclusive), from the usage lines
    of the ``invoices`` whose periods they fall in; days outside them are zero."""
    days = [first + DAY * n for n in range((last - first).days + 1)]
    cost: dict[str, dict[date, Decimal]] = {}
    usage: dict[str, dict[date, Decimal]] = {}
    billed = True
    for invoice in invoices:
        for line in invoice.line_items.all():
            if line.price_type != Price.Type.USAGE or line.meter_definition is None:
                continue
            figures = line_days(invoice=invoice, line=line, subscription=subscription)
            billed = billed and figures.billed
            for day in days:
                if day in figures.cost:
                    series = cost.setdefault(figures.name, {})
                    series[day] = series.get(day, Decimal(0)) + figures.cost[day]
                    series = usage.setdefault(figures.name, {})
                    series[day] = series.get(day, Decimal(0)) + figures.usage[day]
            cost.setdefault(figures.name, {})
            usage.setdefault(figures.name, {})
    zero = Decimal(0)
    return DailyFigures(
        days=days,
        currency=subscription.currency,
        cost=[(name, [v.get(d, zero) for d in days]) for name, v in cost.items()],
        usage=[(name, [v.get(d, zero) for d in days]) for name, v in usage.items()],
        billed=billed,
    )


def subscription_invoices(*, subscription: Subscription, first: date, last: date):
    """The subscription's cycle invoices, voided aside, whose periods meet the days."""
    return list(
        Invoice.objects.filter(
            subscription=subscription,
            billing_reason__in=Invoice.CYCLE_REASONS,
            period_start__lt=datetime.combine(last + DAY, time(), UTC),
            period_end__gt=datetime.combine(first, time(), UTC),
        )
        .exclude(invoice_status=Invoice.Status.VOIDED)
        .select_related("customer")
        .prefetch_related("line_items__meter__feature")
        .order_by("period_start")
    )


def previous_invoice(subscription: Subscription) -> Invoice | None:
    """The invoice of the period before the current one, as it was closed."""
    return (
        Invoice.objects.filter(
            subscription=subscription,
            billing_reason__in=Invoice.CYCLE_REASONS,
            period_end=subscription.current_period_start,
        )
        .select_related("customer")
        .prefetch_related("line_items__meter__feature")
        .first()
    )


def period_days(invoice: Invoice) -> tuple[date, date]:
    """The first and last UTC day of the invoice's period."""
    return day_of(invoice.period_start), day_of(invoice.period_end - timedelta(microseconds=1))


@dataclass(frozen=True)
class BalanceCard:
    """The home page's credits: the ledger's balance, what this period's usage draws from it
    now, what is left (the real-time balance) and purchases waiting for payment."""

    wallet: Wallet
    balance: Balance
    pending: Decimal  # in the currency


def portal_wallet(customer: Customer, subscription: Subscription | None = None) -> Wallet | None:
    """The customer's open wallet in its subscription's currency, else its newest open one."""
    wallets = customer.wallets.exclude(wallet_status=Wallet.Status.CLOSED)
    if subscription is not None:
        return wallets.filter(currency=subscription.currency).first()
    return wallets.order_by("-created_at").first()


def balance_card(customer: Customer, subscription: Subscription | None) -> BalanceCard | None:
    wallet = portal_wallet(customer, subscription)
    if wallet is None:
        return None
    pending = wallet.transactions.filter(
        type=WalletTransaction.Type.CREDIT,
        transaction_status=WalletTransaction.Status.PENDING,
        transaction_reason=WalletTransaction.Reason.PURCHASED_CREDIT_INVOICED,  # not its bonus
    ).aggregate(total=Sum("amount"))["total"]
    return BalanceCard(wallet=wallet, balance=wallet_balance(wallet), pending=pending or Decimal(0))


_Reason = WalletTransaction.Reason
# What each entry means, in the customer's words.
REASON_LABELS = {
    _Reason.FREE_CREDIT_GRANT: "Promotional credits",
    _Reason.SUBSCRIPTION_CREDIT_GRANT: "Credits included in your plan",
    _Reason.PURCHASED_CREDIT_DIRECT: "Credits purchased",
    _Reason.PURCHASED_CREDIT_INVOICED: "Credits purchased on invoice",
    _Reason.PURCHASED_CREDIT_BONUS: "Bonus credits",
    _Reason.INVOICE_PAYMENT: "Applied to an invoice",
    _Reason.CREDIT_EXPIRED: "Credits expired",
    _Reason.WALLET_TERMINATION: "Wallet closed",
    _Reason.MANUAL_BALANCE_DEBIT: "Adjustment",
    _Reason.INVOICE_VOID_REFUND: "Returned from a voided invoice",
}


def ledger_stamp(customer: Customer) -> str:
    """Changes whenever the customer's wallets or their ledgers do: the live panel reloads
    the balance card then, not only when usage is recomputed."""
    wallets = customer.wallets.aggregate(at=Max("updated_at"))["at"]
    entries = WalletTransaction.objects.filter(wallet__customer=customer).aggregate(
        at=Max("updated_at")
    )["at"]
    return "|".join(moment.isoformat() if moment else "" for moment in (wallets, entries))


def customer_ledger(customer: Customer):
    """Every transaction of the customer's wallets, newest first."""
    return ledger_entries(wallets=customer.wallets.all())


def customer_budgets(customer: Customer):
    """The customer's budgets, the account's first."""
    return (
        Budget.objects.filter(customer=customer)
        .select_related("feature")
        .order_by(F("feature").asc(nulls_first=True))
    )


def budget_features(subscription: Subscription | None) -> list:
    """The features a budget may be set for: those the subscription's plan prices."""
    if subscription is None:
        return []
    return list(
        Feature.objects.filter(meter__prices__plan_id=subscription.plan_id)
        .distinct()
        .order_by("name")
    )
