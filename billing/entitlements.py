"""The "may I?" check: what a customer's active subscriptions entitle them to, per feature,
how much of it the usage period has used (read as invoices read it: ``meter_readings``),
and whether one more use is allowed (``usage_denied``, the one rule)."""

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.budgets import budget_capped
from billing.models import EntitlementUsageExceeded, EventType, Subscription, Wallet
from billing.outbox import event_emit
from billing.periods import period_containing
from billing.wallets import Balance, wallet_balance
from catalog.models import Entitlement, Feature
from metering.models import Customer
from metering.selectors import meter_readings

ZERO = Decimal(0)
METERED = Feature.Type.METERED
NEVER = Entitlement.ResetPeriod.NEVER

# Why a use is refused (``usage_denied``).
FEATURE_DISABLED = "feature_disabled"
USAGE_LIMIT_REACHED = "usage_limit_reached"
BUDGET_CAPPED = "budget_capped"
WALLET_EMPTY = "wallet_empty"


def usage_denied(
    *,
    feature_type: str,
    is_enabled: bool,
    current_usage: Decimal,
    usage_limit: int | None,
    is_soft_limit: bool,
    prepaid_exhausted: bool,
    budget_capped: bool = False,
) -> str | None:
    """Why one more use of a feature is refused, or None when it is allowed.

    A disabled feature (a boolean one set false, or none entitled) is refused. A metered
    one is refused at a hard limit (usage >= limit; a soft limit only reports), when the
    customer's budget is capped, and when its PRE_PAID wallet is empty with no auto top-up.
    """
    if not is_enabled:
        return FEATURE_DISABLED
    if feature_type != METERED:
        return None
    if usage_limit is not None and not is_soft_limit and current_usage >= usage_limit:
        return USAGE_LIMIT_REACHED
    if budget_capped:
        return BUDGET_CAPPED
    if prepaid_exhausted:
        return WALLET_EMPTY
    return None


def prepaid_exhausted(balance: Balance | None) -> bool:
    """A PRE_PAID wallet with nothing left in real time that no auto top-up will refill."""
    if balance is None or balance.wallet.wallet_type != Wallet.Type.PRE_PAID:
        return False
    return balance.real_time_balance <= 0 and not balance.wallet.auto_topup_enabled


def usage_period(
    *, subscription: Subscription, reset_period: str, now: datetime
) -> tuple[datetime, datetime, datetime | None]:
    """The ``[start, end)`` whose usage counts against a limit, and when it next resets.

    Empty, or the subscription's own one-period length, is its current billing period;
    NEVER counts from the subscription's start; any other length is counted from the
    billing anchor, as billing periods are, and starts no earlier than the subscription."""
    if reset_period == NEVER:
        return subscription.start_date, subscription.current_period_end, None
    if not reset_period or (
        reset_period == subscription.billing_period and subscription.billing_period_count == 1
    ):
        end = subscription.current_period_end
        return subscription.current_period_start, end, end
    start, end = period_containing(subscription.billing_anchor, reset_period, 1, now)
    return max(start, subscription.start_date), end, end


@dataclass(frozen=True)
class Source:
    """One subscription's entitlement to a feature, with its usage period."""

    subscription: Subscription
    entitlement: Entitlement
    start: datetime
    end: datetime
    next_reset: datetime | None


@dataclass(frozen=True)
class FeatureEntitlement:
    """A feature as every active subscription of the customer entitles it, added up:
    enabled if any is, the sum of the limits (unlimited if any is), soft if all are."""

    feature: Feature
    sources: list[Source]

    @property
    def enabled(self) -> list[Source]:
        return [s for s in self.sources if s.entitlement.is_enabled]

    @property
    def is_enabled(self) -> bool:
        return bool(self.enabled)

    @property
    def total_limit(self) -> int | None:
        limits = [s.entitlement.usage_limit for s in self.enabled]
        if not limits or None in limits:
            return None
        return sum(limits)

    @property
    def is_soft_limit(self) -> bool:
        return bool(self.enabled) and all(s.entitlement.is_soft_limit for s in self.enabled)

    @property
    def next_usage_reset_at(self) -> datetime | None:
        resets = [s.next_reset for s in self.enabled if s.next_reset is not None]
        return min(resets, default=None)

    @property
    def static_values(self) -> list[str]:
        return [s.entitlement.static_value for s in self.enabled if s.entitlement.static_value]


@dataclass(frozen=True)
class FeatureUsage:
    entitlement: FeatureEntitlement
    current_usage: Decimal
    wallet: Balance | None
    denied: str | None

    @property
    def allowed(self) -> bool:
        return self.denied is None

    @property
    def remaining(self) -> Decimal | None:
        limit = self.entitlement.total_limit
        return None if limit is None else max(limit - self.current_usage, ZERO)

    @property
    def usage_percent(self) -> Decimal:
        limit = self.entitlement.total_limit
        if not limit:
            return ZERO
        return (self.current_usage * 100 / limit).quantize(Decimal("0.01"), ROUND_HALF_UP)


def customer_by_key(*, customer_id: str | None, lookup_key: str | None) -> Customer:
    """The customer named by id or by lookup key (its external id); a 400 names which."""
    if bool(customer_id) == bool(lookup_key):
        raise ValidationError(
            {"customer_id": ["Send customer_id or customer_lookup_key, not both or neither."]}
        )
    found = Customer.objects.filter(
        **({"pk": customer_id} if customer_id else {"external_id": lookup_key})
    ).first()
    if found is None:
        name, value = (
            ("customer_id", customer_id) if customer_id else ("customer_lookup_key", lookup_key)
        )
        raise ValidationError({name: [f"No customer has the {name} {value}."]})
    return found


def features_by_keys(*, ids: list[str], lookup_keys: list[str]) -> list[Feature]:
    """Features by id and lookup key; any unknown one is a 400 naming it."""
    found = list(Feature.objects.filter(pk__in=ids)) if ids else []
    found += list(Feature.objects.filter(lookup_key__in=lookup_keys)) if lookup_keys else []
    for name, wanted, have in (
        ("feature_ids", ids, {f.pk for f in found}),
        ("feature_lookup_keys", lookup_keys, {f.lookup_key for f in found}),
    ):
        missing = [v for v in wanted if v not in have]
        if missing:
            raise ValidationError({name: [f"No feature has the key {', '.join(missing)}."]})
    return list({f.pk: f for f in found}.values())


def customer_entitlements(
    *, customer: Customer, features: list[Feature] | None = None, now: datetime | None = None
) -> tuple[list[Subscription], list[FeatureEntitlement]]:
    """The customer's active subscriptions and, per feature they entitle (or per feature of
    ``features``, entitled or not), what they entitle, ordered by feature name."""
    now = now or timezone.now()
    subscriptions = list(
        Subscription.objects.filter(customer=customer, status=Subscription.Status.ACTIVE)
        .select_related("customer", "plan")
        .order_by("created_at", "pk")
    )
    rows = Entitlement.objects.filter(
        plan_id__in={s.plan_id for s in subscriptions}, status=Entitlement.Status.PUBLISHED
    ).select_related("feature__meter")
    if features is not None:
        rows = rows.filter(feature__in=features)
    by_plan: dict[str, list[Entitlement]] = {}
    for row in rows:
        by_plan.setdefault(row.plan_id, []).append(row)
    sources: dict[str, list[Source]] = {f.pk: [] for f in features or []}
    named = {f.pk: f for f in features or []}
    for subscription in subscriptions:
        for entitlement in by_plan.get(subscription.plan_id, []):
            start, end, reset = usage_period(
                subscription=subscription, reset_period=entitlement.usage_reset_period, now=now
            )
            named.setdefault(entitlement.feature_id, entitlement.feature)
            sources.setdefault(entitlement.feature_id, []).append(
                Source(subscription, entitlement, start, end, reset)
            )
    entitled = [FeatureEntitlement(named[pk], found) for pk, found in sources.items()]
    return subscriptions, sorted(entitled, key=lambda e: (e.feature.name, e.feature.pk))


def _metered(source: Source) -> bool:
    feature = source.entitlement.feature
    return feature.type == METERED and hasattr(feature, "meter")


def customer_usage_summary(
    *,
    customer: Customer,
    features: list[Feature] | None = None,
    now: datetime | None = None,
) -> tuple[list[Subscription], list[FeatureUsage]]:
    """Per feature: its entitlement, its usage in the usage period, the customer's wallet in
    the currency of the subscription that entitles it, and whether one more use is allowed.

    Where several subscriptions entitle one feature, its usage is that of the longest of
    their periods (usage is the customer's, not a subscription's)."""
    now = now or timezone.now()
    subscriptions, entitled = customer_entitlements(customer=customer, features=features, now=now)
    windows = sorted(
        {
            (s.entitlement.feature.meter, s.start, s.end)
            for e in entitled
            for s in e.enabled
            if _metered(s)
        },
        key=lambda w: (w[0].pk, w[1], w[2]),
    )
    readings = dict(
        zip(
            [(m.pk, start, end) for m, start, end in windows],
            meter_readings(external_customer_id=customer.external_id, windows=windows),
            strict=True,
        )
    )
    balances = {
        w.currency: wallet_balance(w, now=now)
        for w in Wallet.objects.filter(customer=customer, wallet_status=Wallet.Status.ACTIVE)
    }
    summary = []
    for feature in entitled:
        usage = max(
            (
                readings[(s.entitlement.feature.meter.pk, s.start, s.end)].quantity
                for s in feature.enabled
                if _metered(s)
            ),
            default=ZERO,
        )
        currency = feature.sources[0].subscription.currency if feature.sources else None
        balance = balances.get(currency)
        denied = usage_denied(
            feature_type=feature.feature.type,
            is_enabled=feature.is_enabled,
            current_usage=usage,
            usage_limit=feature.total_limit,
            is_soft_limit=feature.is_soft_limit,
            prepaid_exhausted=prepaid_exhausted(balance),
            budget_capped=budget_capped(customer_id=customer.pk, feature_id=feature.feature.pk),
        )
        summary.append(FeatureUsage(feature, usage, balance, denied))
    return subscriptions, summary


def entitlements_exceeded_record(
    *, subscription_id: str, now: datetime | None = None
) -> list[EntitlementUsageExceeded]:
    """After a draft recompute: for each limited metered entitlement of the subscription
    whose usage period's usage has reached its limit (hard or soft), record it and emit
    ``entitlement.exceeded`` once per subscription, feature and usage period. The record's
    uniqueness makes it once when recomputes run at the same time."""
    now = now or timezone.now()
    subscription = (
        Subscription.objects.filter(pk=subscription_id, status=Subscription.Status.ACTIVE)
        .select_related("customer")
        .first()
    )
    if subscription is None:
        return []
    limited = [
        entitlement
        for entitlement in Entitlement.objects.filter(
            plan_id=subscription.plan_id,
            status=Entitlement.Status.PUBLISHED,
            is_enabled=True,
            feature__type=METERED,
            usage_limit__isnull=False,
            feature__meter__isnull=False,
        ).select_related("feature__meter")
    ]
    periods = [
        usage_period(subscription=subscription, reset_period=e.usage_reset_period, now=now)
        for e in limited
    ]
    readings = meter_readings(
        external_customer_id=subscription.customer.external_id,
        windows=[
            (e.feature.meter, start, end)
            for e, (start, end, _) in zip(limited, periods, strict=True)
        ],
    )
    recorded = []
    for entitlement, (start, end, _), reading in zip(limited, periods, readings, strict=True):
        if reading.quantity < entitlement.usage_limit:
            continue
        done = EntitlementUsageExceeded.objects.filter(
            subscription=subscription, feature_id=entitlement.feature_id, period_start=start
        )
        if done.exists():
            continue
        row = _exceeded_record(
            subscription=subscription,
            entitlement=entitlement,
            period=(start, end),
            usage=reading.quantity,
        )
        if row is not None:
            recorded.append(row)
    return recorded


@transaction.atomic
def _exceeded_record(
    *, subscription: Subscription, entitlement: Entitlement, period, usage: Decimal
) -> EntitlementUsageExceeded | None:
    """The record and its webhook, together; None if another run recorded it first."""
    try:
        with transaction.atomic():
            row = EntitlementUsageExceeded.objects.create(
                subscription=subscription,
                feature_id=entitlement.feature_id,
                period_start=period[0],
                usage=usage,
                usage_limit=entitlement.usage_limit,
            )
    except IntegrityError:
        return None
    event_emit(
        event_type=EventType.ENTITLEMENT_EXCEEDED,
        customer_id=subscription.customer_id,
        data={
            "subscription_id": subscription.pk,
            "customer_id": subscription.customer_id,
            "external_customer_id": subscription.customer.external_id,
            "entitlement_id": entitlement.pk,
            "feature_id": entitlement.feature_id,
            "usage_limit": entitlement.usage_limit,
            "is_soft_limit": entitlement.is_soft_limit,
            "current_usage": format(usage.normalize(), "f"),
            "period_start": period[0],
            "period_end": period[1],
        },
    )
    return row
