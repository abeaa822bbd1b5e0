"""Alerts: one evaluator for every watched value (a wallet's real-time balance, a
subscription's spend, a feature's usage on a subscription), the rules on subscriptions, and
the log of state changes, each logged once, with its webhook event and email."""

from decimal import Decimal

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from billing import emails, outbox, selectors
from billing.models import (
    AlertEntity,
    AlertLog,
    AlertSetting,
    AlertState,
    AlertType,
    Invoice,
    Subscription,
)
from catalog.models import Feature
from metering.models import Customer

LEVELS = (  # most severe first
    ("critical", AlertState.IN_ALARM),
    ("warning", AlertState.WARNING),
    ("info", AlertState.INFO),
)
STATE_LABELS = {
    AlertState.OK: "back to normal",
    AlertState.INFO: "info",
    AlertState.WARNING: "warning",
    AlertState.IN_ALARM: "critical",
}


def alert_state_for(config: dict, value: Decimal, *, default_condition: str = "below") -> str:
    """The most severe level whose threshold ``value`` is beyond (below, or above per its
    condition); ``ok`` when alerts are off or none is crossed."""
    if not config or not config.get("alert_enabled"):
        return AlertState.OK
    for level, state in LEVELS:
        rule = config.get(level) or {}
        if rule.get("threshold") in (None, ""):
            continue
        threshold = Decimal(str(rule["threshold"]))
        above = rule.get("condition", default_condition) == "above"
        if (value > threshold) if above else (value < threshold):
            return state
    return AlertState.OK


def alert_change_record(
    *,
    customer: Customer,
    entity_type: str,
    entity_id: str,
    alert_type: str,
    config: dict,
    before: str,
    after: str,
    value: Decimal,
    parent_entity_id: str = "",
) -> AlertLog | None:
    """Log a change of state, with its ``alert.state_changed`` event and emails, in the
    caller's transaction. The caller holds the lock of the row keeping the state; the log's
    unique sequence makes a change logged once even so."""
    if before == after:
        return None
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("alert_change_record must run in the transaction holding the state")
    entity = {
        "entity_type": entity_type,
        "entity_id": entity_id,
        "parent_entity_id": parent_entity_id,
    }
    last = AlertLog.objects.filter(**entity).aggregate(n=Max("sequence"))["n"] or 0
    log = AlertLog.objects.create(
        customer=customer,
        parent_entity_type=AlertEntity.SUBSCRIPTION if parent_entity_id else "",
        alert_type=alert_type,
        alert_status=after,
        previous_status=before,
        sequence=last + 1,
        value=value,
        alert_settings=config,
        **entity,
    )
    outbox.alert_emit(log=log)
    _alert_email(log=log, customer=customer)
    return log


def alert_recipients(customer: Customer) -> list[str]:
    """The customer's address, and the operator's (TALLY_ALERTS_EMAIL) when set."""
    return [to for to in (customer.email, django_settings.TALLY_ALERTS_EMAIL) if to]


def _alert_email(*, log: AlertLog, customer: Customer) -> None:
    what = {
        AlertType.LOW_ONGOING_BALANCE: "Wallet balance",
        AlertType.SUBSCRIPTION_SPEND: "Spend this period",
        AlertType.FEATURE_USAGE: "Usage this period",
    }[log.alert_type]
    state = STATE_LABELS[log.alert_status]
    for to in alert_recipients(customer):
        emails.email_queue(
            key=f"alert:{log.pk}:{to}",
            to=to,
            subject=f"{what} alert for {customer.name}: {state}",
            body=(
                f"{what} for {customer.name} is {format(log.value.normalize(), 'f')}: the "
                f"alert went from {STATE_LABELS[log.previous_status]} to {state}.\n\n"
                f"Watched: {log.entity_type} {log.entity_id}"
                + (f" on subscription {log.parent_entity_id}" if log.parent_entity_id else "")
                + "\n"
            ),
        )


# Rules on subscriptions: spend, or one feature's usage.


LEVEL_NAMES = ("info", "warning", "critical")


def alert_config_normalize(config: dict) -> dict:
    """Flexprice's AlertSettings as stored: absolute thresholds, each level's condition
    spelled out (``above`` unless sent: spend and usage alert as they grow)."""
    normal = {
        "alert_enabled": bool(config.get("alert_enabled", False)),
        "alert_threshold_type": "absolute",
    }
    for level in LEVEL_NAMES:
        rule = config.get(level)
        if rule:
            normal[level] = {
                "threshold": format(Decimal(str(rule["threshold"])).normalize(), "f"),
                "condition": rule.get("condition") or "above",
            }
    return normal


def _watched(*, entity_type: str, entity_id: str, parent_entity_id: str | None):
    """The subscription and feature a rule watches, checked."""
    if entity_type == AlertEntity.SUBSCRIPTION:
        if parent_entity_id:
            raise ValidationError(
                {"parent_entity_id": "A subscription's spend alert has no parent."}
            )
        subscription = Subscription.objects.filter(pk=entity_id).first()
        if subscription is None:
            raise ValidationError({"entity_id": f"No subscription has the id {entity_id!r}."})
        return subscription, None
    if entity_type != AlertEntity.FEATURE:
        raise ValidationError(
            {
                "entity_type": f"Tally does not evaluate {entity_type!r} alerts here: give "
                "subscription or feature (wallet alerts are the wallet's alert_settings)."
            }
        )
    feature = Feature.objects.filter(pk=entity_id).first()
    if feature is None:
        raise ValidationError({"entity_id": f"No feature has the id {entity_id!r}."})
    if not parent_entity_id:
        raise ValidationError(
            {"parent_entity_id": "A feature's usage alert names its subscription."}
        )
    subscription = Subscription.objects.filter(pk=parent_entity_id).first()
    if subscription is None:
        raise ValidationError(
            {"parent_entity_id": f"No subscription has the id {parent_entity_id!r}."}
        )
    if not subscription.plan.prices.filter(meter__feature=feature).exists():
        raise ValidationError(
            {"entity_id": f"The subscription's plan does not price the feature {feature.pk}."}
        )
    return subscription, feature


@transaction.atomic
def alert_setting_create(
    *, entity_type: str, entity_id: str, config: dict, parent_entity_id: str | None = None
) -> AlertSetting:
    subscription, feature = _watched(
        entity_type=entity_type, entity_id=entity_id, parent_entity_id=parent_entity_id
    )
    setting = AlertSetting(
        entity_type=entity_type,
        subscription=subscription,
        feature=feature,
        config=alert_config_normalize(config),
    )
    setting.validate_constraints()
    setting.save()
    # Robust: the rule is stored; the next recompute evaluates it if this fails.
    transaction.on_commit(
        lambda: subscription_alerts_check(subscription_id=subscription.pk), robust=True
    )
    return setting


@transaction.atomic
def alert_setting_update(*, setting: AlertSetting, config: dict) -> AlertSetting:
    setting = AlertSetting.objects.select_for_update().get(pk=setting.pk)
    setting.config = alert_config_normalize(config)
    setting.save(update_fields=["config", "updated_at"])
    transaction.on_commit(
        lambda: subscription_alerts_check(subscription_id=setting.subscription_id), robust=True
    )
    return setting


def alert_setting_delete(*, setting: AlertSetting) -> None:
    """The rule goes; its log stays."""
    setting.delete()


def watched_value(setting: AlertSetting, draft: Invoice | None) -> Decimal:
    """A subscription's spend is its draft's subtotal; a feature's usage, the quantity on the
    draft's line for its meter (every price of one meter reads the same quantity)."""
    if draft is None:
        return Decimal(0)
    if setting.feature_id is None:
        return draft.subtotal
    quantities = draft.line_items.filter(meter__feature_id=setting.feature_id).values_list(
        "quantity", flat=True
    )
    return max(quantities, default=Decimal(0))


def subscription_alerts_check(*, subscription_id: str) -> int:
    """Evaluate the subscription's rules against its draft, after a recompute. Each rule's
    row is locked while its state changes, so concurrent checks log a change once. Returns
    the changes logged."""
    changed = 0
    with transaction.atomic():
        rules = list(
            AlertSetting.objects.select_for_update()
            .filter(subscription_id=subscription_id)
            .order_by("pk")
        )
        if not rules:
            return 0
        subscription = Subscription.objects.select_related("customer").get(pk=subscription_id)
        draft = selectors.open_draft(subscription)
        for rule in rules:
            value = watched_value(rule, draft)
            after = alert_state_for(rule.config, value, default_condition="above")
            log = alert_change_record(
                customer=subscription.customer,
                entity_type=rule.entity_type,
                entity_id=rule.entity_id,
                parent_entity_id=rule.parent_entity_id,
                alert_type=(
                    AlertType.FEATURE_USAGE if rule.feature_id else AlertType.SUBSCRIPTION_SPEND
                ),
                config=rule.config,
                before=rule.alert_state,
                after=after,
                value=value,
            )
            if log is not None:
                rule.alert_state = after
                rule.save(update_fields=["alert_state", "updated_at"])
                changed += 1
    return changed
