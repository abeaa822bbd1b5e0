"""Customer budgets: a monthly spend limit the customer sets in the portal, for the account
or one feature, with emails at 50/80/100 % and an optional hard cap at 100 %.

A budget's month is its customer's open billing period: spend is what the proposed
invoices of the customer's active subscriptions in the budget's currency add up to now
(their subtotals, before prepaid credits; for a feature, the lines that price its meter).
When a period closes, the next draft starts a new budget period and its thresholds re-arm.
The state (spend, thresholds reached, capped) is kept by the recompute path, so
``budget_capped`` reads a few cached ids."""

import hashlib
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import emails, outbox, selectors
from billing.models import Budget, Invoice, InvoiceLineItem, Subscription
from catalog.models import Feature
from catalog.money import format_money
from metering.models import Customer

ZERO = Decimal(0)
CAPPED_KEY = "tally:budget-capped:"  # then the customer id
CAPPED_SECONDS = 10  # the longest a cap change can go unseen by another process
ACCOUNT = ""  # the account's scope among the capped ones


def budget_capped(*, customer_id: str, feature_id: str | None = None) -> bool:
    """Whether a hard cap stops this customer's use (of this feature): its account budget's,
    or the feature's. On the entitlement check's hot path: one cache read, a small query
    on a miss."""
    key = CAPPED_KEY + customer_id
    capped = cache.get(key)
    if capped is None:
        capped = [
            feature or ACCOUNT
            for feature in Budget.objects.filter(customer_id=customer_id, capped=True)
            .values_list("feature_id", flat=True)
            .iterator()
        ]
        cache.set(key, capped, CAPPED_SECONDS)
    return ACCOUNT in capped or (feature_id is not None and feature_id in capped)


def _capped_forget(customer_id: str) -> None:
    transaction.on_commit(lambda: cache.delete(CAPPED_KEY + customer_id))


def open_drafts(*, customer_id: str, currency: str) -> list[Invoice]:
    """The proposed invoices of the customer's open periods in ``currency``."""
    subscriptions = Subscription.objects.filter(
        customer_id=customer_id, currency=currency, status=Subscription.Status.ACTIVE
    )
    drafts = [selectors.open_draft(subscription) for subscription in subscriptions]
    drafts = [draft for draft in drafts if draft is not None]
    return drafts


def budget_spent(budget: Budget, drafts: list[Invoice]) -> Decimal:
    if budget.feature_id is None:
        return sum((draft.subtotal for draft in drafts), ZERO)
    lines = InvoiceLineItem.objects.filter(
        invoice__in=drafts, meter__feature_id=budget.feature_id
    ).aggregate(total=Sum("amount"))
    return lines["total"] or ZERO


def budget_thresholds(budget: Budget) -> list[int]:
    """The percents whose crossing is reported: those emailed, and 100 when it caps."""
    return sorted(set(budget.alert_percents) | ({100} if budget.hard_cap else set()))


def _budget_evaluate(budget: Budget, *, now: datetime) -> list[int]:
    """Update a locked budget's state; returns the percents it reached just now."""
    drafts = open_drafts(customer_id=budget.customer_id, currency=budget.currency)
    period_key = ",".join(sorted(draft.pk for draft in drafts))
    if period_key != budget.period_key:
        budget.period_key, budget.reached_percents = period_key, []
    was_capped = budget.capped
    budget.spent = budget_spent(budget, drafts)
    reached = [
        percent
        for percent in budget_thresholds(budget)
        if budget.spent * 100 >= budget.amount * percent and percent not in budget.reached_percents
    ]
    budget.reached_percents = sorted(budget.reached_percents + reached)
    budget.capped = budget.hard_cap and budget.spent >= budget.amount
    budget.evaluated_at = now
    budget.save(
        update_fields=[
            "period_key",
            "spent",
            "reached_percents",
            "capped",
            "evaluated_at",
            "updated_at",
        ]
    )
    for percent in reached:
        _threshold_report(budget, percent)
    if budget.capped != was_capped:
        _capped_forget(budget.customer_id)
    return reached


def customer_budgets_check(*, customer_id: str, now: datetime | None = None) -> int:
    """After a recompute: each budget's spend and thresholds. The budgets are locked, so
    concurrent checks report a crossing once. Returns the thresholds reached."""
    now = now or timezone.now()
    with transaction.atomic():
        budgets = list(
            Budget.objects.select_for_update(of=("self",))
            .filter(customer_id=customer_id)
            .select_related("customer", "feature")
            .order_by("pk")
        )
        return sum(len(_budget_evaluate(budget, now=now)) for budget in budgets)


def budgets_refresh(*, now: datetime | None = None) -> int:
    """After periods close: re-evaluate the budgets that reached a threshold, so a new period
    re-arms them and lifts a cap even if no usage (stopped by the cap) ever recomputes the
    draft. Returns the customers checked."""
    customers = set(
        Budget.objects.filter(~Q(reached_percents=[]) | Q(capped=True)).values_list(
            "customer_id", flat=True
        )
    )
    for customer_id in customers:
        customer_budgets_check(customer_id=customer_id, now=now)
    return len(customers)


def budget_recipients(customer: Customer) -> list[str]:
    """The customer's address and its portal users', each once."""
    found = [customer.email, *customer.users.values_list("user__email", flat=True)]
    return list(dict.fromkeys(to.lower() for to in found if to))


def _threshold_report(budget: Budget, percent: int) -> None:
    scope = budget.feature.name if budget.feature_id else "your account"
    outbox.budget_emit(budget=budget, percent=percent)
    if percent not in budget.alert_percents:
        return
    period = hashlib.sha256(budget.period_key.encode()).hexdigest()[:16]
    capped = " Use is now stopped: the budget is a hard cap." if budget.capped else ""
    for to in budget_recipients(budget.customer):
        emails.email_queue(
            key=f"budget:{budget.pk}:{period}:{percent}:{to}",
            to=to,
            subject=f"{percent}% of your budget for {scope} is used",
            body=(
                f"Spend this period for {scope} is "
                f"{format_money(budget.spent, budget.currency)}, {percent}% or more of the "
                f"{format_money(budget.amount, budget.currency)} budget.{capped}\n"
            ),
        )


@transaction.atomic
def budget_set(
    *,
    customer: Customer,
    amount: Decimal,
    currency: str,
    feature: Feature | None = None,
    alert_percents: list[int] = (),
    hard_cap: bool = False,
    user=None,
    set_by: str = Budget.SetBy.CUSTOMER,
    locked: bool | None = None,
) -> Budget:
    """Create or change the customer's budget for the account (or ``feature``), and
    evaluate it at once. A customer cannot change a budget the operator locked."""
    budget = (
        Budget.objects.select_for_update()
        .filter(customer=customer, feature=feature)
        .order_by("pk")
        .first()
    ) or Budget(customer=customer, feature=feature)
    if budget.locked and set_by == Budget.SetBy.CUSTOMER:
        raise PermissionDenied("The operator has set this budget; ask them to change it.")
    if budget.pk and budget.amount != amount:
        budget.reached_percents = []  # a new amount: its thresholds are crossed anew
    budget.amount, budget.currency = amount, currency.lower()
    budget.alert_percents, budget.hard_cap = list(alert_percents), hard_cap
    budget.set_by, budget.set_by_user = set_by, user
    if locked is not None:
        budget.locked = locked
    budget.full_clean()
    budget.save()
    _budget_evaluate(budget, now=timezone.now())
    _capped_forget(customer.pk)
    return budget


@transaction.atomic
def budget_clear(*, budget: Budget, set_by: str = Budget.SetBy.CUSTOMER) -> None:
    budget = Budget.objects.select_for_update().get(pk=budget.pk)
    if budget.locked and set_by == Budget.SetBy.CUSTOMER:
        raise PermissionDenied("The operator has set this budget; ask them to change it.")
    budget.delete()
    _capped_forget(budget.customer_id)
