"""Wallets, their ledger and credit grants under /v1/, in Flexprice's wire format.

Bodies refuse what Tally does not implement (``config.resources.Body``); amounts in credits
are decimal strings with at most 16 digits before the point and 12 after, as the ledger
keeps them.
"""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import django_filters
from django import forms
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import Q
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
    extend_schema_view,
)
from rest_framework import generics, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import credits, ledger, wallets
from billing.api import INVOICE_EXAMPLE, InvoiceSerializer
from billing.models import CreditGrant, Invoice, Subscription, Wallet, WalletTransaction
from catalog.models import Plan
from config.bounds import CanonicalDecimal, Moment, MomentFilter, moment_check
from config.resources import (
    DECIMAL_SCHEMA,
    Amount,
    Body,
    BodyPagination,
    Constant,
    CreatableResourceViewSet,
    ExistingId,
    Ids,
    ListPagination,
    MessageSerializer,
    Metadata,
    NoBody,
    SearchRequest,
    one_page,
    page_examples,
    page_of,
    resource_schema,
)
from config.schema import error_response
from metering.models import Customer

ZERO = Decimal(0)
Reason = WalletTransaction.Reason
MAX_PRIORITY = 1_000_000
MAX_COOLDOWN = timedelta(days=366)
MAX_TEXT = 1_000


@extend_schema_field(DECIMAL_SCHEMA)
class Credits(CanonicalDecimal):
    """Credits, or an amount of a wallet's currency: up to 15 digits before the point (which
    SQLite's floats still hold whole) and 12 after. ``sign``: "positive" refuses 0 and
    below, "zero" refuses below 0, None takes any sign."""

    def __init__(self, *, sign: str | None = "positive", **kwargs):
        self.sign = sign
        super().__init__(max_digits=27, decimal_places=12, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if self.sign == "positive" and value <= 0:
            raise serializers.ValidationError("Must be more than 0.")
        if self.sign == "zero" and value < 0:
            raise serializers.ValidationError("Must not be negative.")
        return value

    def to_representation(self, value):
        return format(Decimal(value).normalize(), "f")


def _number(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _future(moment: datetime, *, now: datetime) -> datetime:
    if moment <= now:
        raise serializers.ValidationError(wallets.EXPIRY_IN_THE_PAST)
    return moment


def _day(value: int) -> datetime:
    """Flexprice's YYYYMMDD integer: the start of that day, UTC."""
    try:
        return moment_check(datetime.strptime(str(value), "%Y%m%d").replace(tzinfo=UTC))
    except ValueError:
        raise serializers.ValidationError(
            "Give a day as a YYYYMMDD number from 20000101 to 20991231, e.g. 20270101."
        ) from None


def _customer(data: dict) -> Customer:
    """``customer_id`` or ``external_customer_id``, popped from ``data``."""
    customer = data.pop("customer_id", None)
    external_id = data.pop("external_customer_id", None)
    if customer is None and external_id:
        customer = Customer.objects.filter(external_id=external_id).first()
        if customer is None:
            raise serializers.ValidationError(
                {"external_customer_id": f"No customer has the external id {external_id!r}."}
            )
    if customer is None:
        raise serializers.ValidationError(
            {"customer_id": "Give customer_id or external_customer_id."}
        )
    return customer


# Alert settings and auto top-up, as the SDK's AlertSettings and AutoTopup.


class AlertThresholdSerializer(Body):
    threshold = Credits(sign=None, help_text="In credits.")
    condition = serializers.ChoiceField(["below", "above"], default="below")


class AlertSettingsSerializer(Body):
    """Stored as sent; ``billing.alerts.alert_state_for`` reads it."""

    alert_enabled = serializers.BooleanField(required=False)
    alert_threshold_type = serializers.ChoiceField(
        ["absolute"],
        required=False,
        error_messages={
            "invalid_choice": "Only absolute thresholds, in credits, are implemented; "
            '"{input}" is not.'
        },
    )
    info = AlertThresholdSerializer(required=False, allow_null=True)
    warning = AlertThresholdSerializer(required=False, allow_null=True)
    critical = AlertThresholdSerializer(required=False, allow_null=True)


def alert_settings_merge(current: dict, sent: dict) -> dict:
    """``current`` with what ``sent`` gives; a level sent as null is removed."""
    merged = {**current}
    for name, value in sent.items():
        if name in ("info", "warning", "critical"):
            if value is None:
                merged.pop(name, None)
                continue
            value = {"threshold": _number(value["threshold"]), "condition": value["condition"]}
        merged[name] = value
    merged.setdefault("alert_threshold_type", "absolute")
    merged.setdefault("alert_enabled", False)
    return merged


COOLDOWN_UNITS = {
    "day": timedelta(days=1),
    "hour": timedelta(hours=1),
    "minute": timedelta(minutes=1),
    "second": timedelta(seconds=1),
}


class CooldownSerializer(Body):
    unit = serializers.ChoiceField(list(COOLDOWN_UNITS))
    value = serializers.IntegerField(min_value=0, max_value=31_622_400)

    def validate(self, data):
        cooldown = data["value"] * COOLDOWN_UNITS[data["unit"]]
        if cooldown > MAX_COOLDOWN:
            raise serializers.ValidationError({"value": "A cooldown is at most 366 days."})
        return data


def cooldown_wire(cooldown: timedelta) -> dict:
    """The largest unit that holds the cooldown whole: 2 hours, not 7,200 seconds."""
    for unit, size in COOLDOWN_UNITS.items():
        if cooldown % size == timedelta(0):
            return {"unit": unit, "value": cooldown // size}
    return {"unit": "second", "value": int(cooldown.total_seconds())}


class AutoTopupSerializer(Body):
    """In credits. ``threshold`` and ``amount`` may be JSON numbers or decimal strings."""

    enabled = serializers.BooleanField(required=False)
    threshold = Credits(sign=None, required=False, allow_null=True)
    amount = Credits(required=False, allow_null=True)
    invoicing = serializers.BooleanField(required=False)
    cooldown = CooldownSerializer(required=False)


AUTO_TOPUP_FIELDS = {
    "enabled": "auto_topup_enabled",
    "threshold": "auto_topup_threshold",
    "amount": "auto_topup_amount",
    "invoicing": "auto_topup_invoicing",
    "cooldown": "auto_topup_cooldown",
}


def auto_topup_fields(sent: dict, *, wallet: Wallet) -> dict:
    """The wallet's auto top-up fields once ``sent`` is applied (what is not sent stays).
    Enabled needs a threshold and an amount; invoiced, the amount must cost whole cents."""
    if "cooldown" in sent:
        cooldown = sent["cooldown"]
        sent = {**sent, "cooldown": cooldown["value"] * COOLDOWN_UNITS[cooldown["unit"]]}
    fields = {
        model: sent[wire] if wire in sent else getattr(wallet, model)
        for wire, model in AUTO_TOPUP_FIELDS.items()
    }
    amount = fields["auto_topup_amount"]
    if amount is not None and not ledger.fits(amount, wallet):
        raise serializers.ValidationError({"auto_topup": {"amount": ["Too many credits."]}})
    if not fields["auto_topup_enabled"]:
        return fields
    missing = [w for w in ("threshold", "amount") if fields[AUTO_TOPUP_FIELDS[w]] is None]
    if missing:
        raise serializers.ValidationError(
            {"auto_topup": {w: ["Give it to enable auto top-up."] for w in missing}}
        )
    price = ledger.to_currency(fields["auto_topup_amount"], wallet)
    if fields["auto_topup_invoicing"] and price != ledger.round_down(price, wallet.currency):
        raise serializers.ValidationError(
            {
                "auto_topup": {
                    "amount": [
                        f"The credits cost {price.normalize():f} {wallet.currency.upper()}, "
                        "which is not a whole amount of the currency to invoice."
                    ]
                }
            }
        )
    return fields


def auto_topup_wire(wallet: Wallet) -> dict:
    return {
        "enabled": wallet.auto_topup_enabled,
        "threshold": _number(wallet.auto_topup_threshold),
        "amount": _number(wallet.auto_topup_amount),
        "invoicing": wallet.auto_topup_invoicing,
        "cooldown": cooldown_wire(wallet.auto_topup_cooldown),
    }


# Credits of a PRE_PAID wallet pay USAGE lines; a POST_PAID wallet's pay whole invoices.
PRICE_TYPES = {Wallet.Type.PRE_PAID: ["USAGE"], Wallet.Type.POST_PAID: ["ALL"]}


class WalletConfigSerializer(Body):
    allowed_price_types = serializers.ListField(
        child=serializers.ChoiceField(["ALL", "USAGE", "FIXED"]), max_length=3
    )


def config_check(config: dict | None, wallet_type: str) -> None:
    if config is None:
        return
    allowed = PRICE_TYPES[wallet_type]
    if sorted(set(config["allowed_price_types"])) != allowed:
        raise serializers.ValidationError(
            {
                "config": {
                    "allowed_price_types": [
                        f"A {wallet_type} wallet's credits pay {allowed[0]} charges; "
                        f"only {allowed} is implemented."
                    ]
                }
            }
        )


# Wallets.

WALLET_EXAMPLE = {
    "id": "wallet_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "customer_id": "cust_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "currency": "usd",
    "wallet_type": "PRE_PAID",
    "wallet_status": "active",
    "status": "published",
    "name": "Prepaid credits",
    "description": "",
    "metadata": {},
    "conversion_rate": "1",
    "topup_conversion_rate": "1",
    "balance": "60",
    "credit_balance": "60",
    "real_time_balance": "24.5",
    "real_time_credit_balance": "24.5",
    "credits_available_breakdown": {"purchased": "50", "free": "10"},
    "auto_topup": {
        "enabled": True,
        "threshold": "10",
        "amount": "50",
        "invoicing": False,
        "cooldown": {"unit": "hour", "value": 1},
    },
    "alert_settings": {
        "alert_enabled": True,
        "alert_threshold_type": "absolute",
        "critical": {"threshold": "5", "condition": "below"},
    },
    "alert_state": "ok",
    "config": {"allowed_price_types": ["USAGE"]},
    "created_at": "2026-11-01T00:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}


class BreakdownSerializer(serializers.Serializer):
    purchased = Amount(help_text="Credits bought (PURCHASED_CREDIT_DIRECT or _INVOICED).")
    free = Amount(help_text="Every other credit: grants, bonuses, refunds.")


class WalletListSerializer(serializers.ListSerializer):
    """A page of wallets reads all their ledgers at once, not one by one."""

    def to_representation(self, data):
        rows = list(data.all() if hasattr(data, "all") else data)
        ids = [wallet.pk for wallet in rows]
        self.child.context.setdefault("ledgers", ledger.balances_by_reason(ids))
        return super().to_representation(rows)


@extend_schema_serializer(
    examples=[OpenApiExample("A prepaid wallet", value=WALLET_EXAMPLE, response_only=True)]
)
class WalletSerializer(serializers.ModelSerializer):
    """``balance`` and ``credit_balance`` are the ledger's (in the currency and in credits);
    ``real_time_*`` take off what the open periods' usage would use now, and are null
    unless asked for (``include_real_time_balance``) or read one wallet at a time."""

    customer_id = serializers.CharField()
    status = Constant("published")
    metadata = Metadata()
    conversion_rate = Amount()
    topup_conversion_rate = Amount(source="conversion_rate")
    balance = serializers.SerializerMethodField()
    credit_balance = serializers.SerializerMethodField()
    real_time_balance = serializers.SerializerMethodField()
    real_time_credit_balance = serializers.SerializerMethodField()
    credits_available_breakdown = serializers.SerializerMethodField()
    auto_topup = serializers.SerializerMethodField()
    alert_settings = serializers.SerializerMethodField()
    config = serializers.SerializerMethodField()

    class Meta:
        list_serializer_class = WalletListSerializer
        model = Wallet
        fields = [
            "id",
            "customer_id",
            "currency",
            "wallet_type",
            "wallet_status",
            "status",
            "name",
            "description",
            "metadata",
            "conversion_rate",
            "topup_conversion_rate",
            "balance",
            "credit_balance",
            "real_time_balance",
            "real_time_credit_balance",
            "credits_available_breakdown",
            "auto_topup",
            "alert_settings",
            "alert_state",
            "config",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def balance_of(self, wallet: Wallet) -> wallets.Balance:
        """Read once per wallet: the ledger, and the open periods' usage if asked."""
        found = self.context.setdefault("balances", {})
        if wallet.pk not in found:
            usage = bool(self.context.get("real_time"))
            read = self.context.get("ledgers", {}).get(wallet.pk)
            found[wallet.pk] = wallets.wallet_balance(wallet, usage=usage, by_reason=read)
        return found[wallet.pk]

    def live(self, wallet: Wallet) -> wallets.Balance | None:
        return self.balance_of(wallet) if self.context.get("real_time") else None

    def ledger_balance(self, wallet: Wallet) -> Decimal:
        return self.balance_of(wallet).credit_balance

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_balance(self, wallet) -> str:
        return _number(ledger.to_currency(self.ledger_balance(wallet), wallet))

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_credit_balance(self, wallet) -> str:
        return _number(self.ledger_balance(wallet))

    @extend_schema_field({**DECIMAL_SCHEMA, "nullable": True})
    def get_real_time_balance(self, wallet) -> str | None:
        live = self.live(wallet)
        return None if live is None else _number(live.real_time_balance)

    @extend_schema_field({**DECIMAL_SCHEMA, "nullable": True})
    def get_real_time_credit_balance(self, wallet) -> str | None:
        live = self.live(wallet)
        return None if live is None else _number(live.real_time_credit_balance)

    @extend_schema_field(BreakdownSerializer)
    def get_credits_available_breakdown(self, wallet) -> dict:
        found = self.balance_of(wallet)
        return {
            "purchased": _number(found.purchased),
            "free": _number(found.credit_balance - found.purchased),
        }

    @extend_schema_field(AutoTopupSerializer)
    def get_auto_topup(self, wallet) -> dict:
        return auto_topup_wire(wallet)

    @extend_schema_field(AlertSettingsSerializer)
    def get_alert_settings(self, wallet) -> dict:
        return wallet.alert_settings or {"alert_enabled": False, "alert_threshold_type": "absolute"}

    @extend_schema_field(WalletConfigSerializer)
    def get_config(self, wallet) -> dict:
        return {"allowed_price_types": PRICE_TYPES[wallet.wallet_type]}


BALANCE_EXAMPLE = {
    **WALLET_EXAMPLE,
    "current_period_usage": "35.5",
    "balance_updated_at": "2026-11-27T10:00:00Z",
    "is_cached_fallback": False,
}


@extend_schema_serializer(
    examples=[OpenApiExample("Live", value=BALANCE_EXAMPLE, response_only=True)]
)
class WalletBalanceSerializer(WalletSerializer):
    current_period_usage = serializers.SerializerMethodField()
    balance_updated_at = serializers.SerializerMethodField()
    is_cached_fallback = Constant(False, schema={"type": "boolean", "enum": [False]})

    class Meta(WalletSerializer.Meta):
        fields = [
            *WalletSerializer.Meta.fields,
            "current_period_usage",
            "balance_updated_at",
            "is_cached_fallback",
        ]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_current_period_usage(self, wallet) -> str:
        return _number(self.live(wallet).current_period_usage)

    def get_balance_updated_at(self, wallet) -> datetime:
        return serializers.DateTimeField().to_representation(self.live(wallet).as_of)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "$50 of credits, $10 free, alerts below 5 credits",
            value={
                "external_customer_id": "acme",
                "currency": "usd",
                "wallet_type": "PRE_PAID",
                "initial_credits_to_load": "10",
                "initial_credits_to_load_expiry_date": 20270101,
                "auto_topup": {
                    "enabled": True,
                    "threshold": "10",
                    "amount": "50",
                    "cooldown": {"unit": "hour", "value": 1},
                },
                "alert_settings": WALLET_EXAMPLE["alert_settings"],
            },
            request_only=True,
        )
    ]
)
class WalletCreateSerializer(Body):
    customer_id = ExistingId(Customer, required=False)
    external_customer_id = serializers.CharField(required=False, max_length=255)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$")
    wallet_type = serializers.ChoiceField(Wallet.Type.choices, default=Wallet.Type.PRE_PAID)
    name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)
    metadata = Metadata(required=False)
    conversion_rate = Credits(required=False, help_text="Currency units per credit.")
    topup_conversion_rate = Credits(required=False, help_text="Must equal conversion_rate.")
    initial_credits_to_load = Credits(sign="zero", required=False)
    initial_credits_expiry_date_utc = Moment(required=False)
    initial_credits_to_load_expiry_date = serializers.IntegerField(
        required=False, help_text="YYYYMMDD: the credits expire at the start of that day, UTC."
    )
    auto_topup = AutoTopupSerializer(required=False)
    alert_settings = AlertSettingsSerializer(required=False)
    config = WalletConfigSerializer(required=False)

    def validate_initial_credits_to_load_expiry_date(self, value):
        return _day(value)

    def validate(self, data):
        now = timezone.now()
        customer = _customer(data)
        data["currency"] = data["currency"].lower()
        rate = data.get("conversion_rate", Decimal(1))
        topup_rate = data.pop("topup_conversion_rate", rate)
        if topup_rate != rate:
            raise serializers.ValidationError(
                {"topup_conversion_rate": "Tally converts top-ups at the conversion_rate."}
            )
        config_check(data.pop("config", None), data["wallet_type"])
        expiry = data.pop("initial_credits_expiry_date_utc", None)
        day = data.pop("initial_credits_to_load_expiry_date", None)
        if expiry and day:
            raise serializers.ValidationError(
                {"initial_credits_to_load_expiry_date": "Give one expiry, not two."}
            )
        if expiry or day:
            try:
                data["initial_credits_expiry"] = _future(expiry or day, now=now)
            except serializers.ValidationError as error:
                name = "initial_credits_expiry_date_utc"
                if not expiry:
                    name = "initial_credits_to_load_expiry_date"
                raise serializers.ValidationError({name: error.detail}) from None
        data["initial_credits"] = data.pop("initial_credits_to_load", ZERO)
        draft = Wallet(currency=data["currency"], conversion_rate=rate)
        if not ledger.fits(data["initial_credits"], draft):
            raise serializers.ValidationError(
                {"initial_credits_to_load": "Too many credits at this conversion_rate."}
            )
        data.update(auto_topup_fields(data.pop("auto_topup", {}), wallet=draft))
        if "alert_settings" in data:
            data["alert_settings"] = alert_settings_merge({}, data["alert_settings"])
        data["customer"] = customer
        return data


def _refuse_duplicate(data: dict) -> None:
    """A 400 with code already_exists when the customer has an open wallet in the currency."""
    wallet = credits.open_wallet(customer_id=data["customer"].pk, currency=data["currency"])
    if wallet is not None:
        message = (
            f"The customer already has an open {wallet.currency.upper()} wallet ({wallet.pk}); "
            "terminate it first."
        )
        raise DjangoValidationError({"currency": DjangoValidationError(message, code="unique")})


class WalletUpdateSerializer(Body):
    """What is sent changes; what is not stays. An alert level sent as null is removed."""

    name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)
    metadata = Metadata(required=False)
    auto_topup = AutoTopupSerializer(required=False)
    alert_settings = AlertSettingsSerializer(required=False)
    config = WalletConfigSerializer(required=False)

    def validate(self, data):
        wallet = self.context["wallet"]
        config_check(data.pop("config", None), wallet.wallet_type)
        if "auto_topup" in data:
            data.update(auto_topup_fields(data.pop("auto_topup"), wallet=wallet))
        if "alert_settings" in data:
            data["alert_settings"] = alert_settings_merge(
                wallet.alert_settings, data["alert_settings"]
            )
        return data


class WalletSearchSerializer(Body, SearchRequest):
    wallet_ids = Ids(required=False, max_length=MAX_TEXT)
    status = serializers.ChoiceField(Wallet.Status.choices, required=False)
    alert_enabled = serializers.BooleanField(required=False)

    lookups = {"wallet_ids": "id__in", "status": "wallet_status"}

    def filter(self, queryset):
        queryset = super().filter(queryset)
        if "alert_enabled" in self.validated_data:
            enabled = Q(alert_settings__alert_enabled=True)
            wanted = self.validated_data["alert_enabled"]
            missing = Q(alert_settings__alert_enabled__isnull=True)  # NOT of NULL is NULL
            queryset = queryset.filter(enabled if wanted else ~enabled | missing)
        return queryset


# Top-ups.


class TopUpSerializer(Body):
    transaction_reason = serializers.ChoiceField(wallets.TOP_UP_REASONS)
    credits_to_add = Credits(required=False)
    amount = Credits(required=False, help_text="In the wallet's currency; or credits_to_add.")
    priority = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_PRIORITY
    )
    expiry_date_utc = Moment(required=False, allow_null=True)
    idempotency_key = serializers.CharField(required=False, max_length=255)
    description = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)
    metadata = Metadata(required=False)
    bonus_credits_to_add = Credits(required=False)
    bonus_credits_expiry_date_utc = Moment(required=False, allow_null=True)

    def validate(self, data):
        now = timezone.now()
        for name in ("expiry_date_utc", "bonus_credits_expiry_date_utc"):
            if data.get(name) is not None:
                try:
                    _future(data[name], now=now)
                except serializers.ValidationError as error:
                    raise serializers.ValidationError({name: error.detail}) from None
        if "bonus_credits_expiry_date_utc" in data and "bonus_credits_to_add" not in data:
            raise serializers.ValidationError(
                {"bonus_credits_expiry_date_utc": "It goes with bonus_credits_to_add."}
            )
        wallet = self.context["wallet"]
        if "amount" in data and data["amount"] / wallet.conversion_rate >= ledger.LIMIT:
            raise serializers.ValidationError({"amount": "Too many credits for the ledger."})
        return {
            "reason": data["transaction_reason"],
            "credits": data.get("credits_to_add"),
            "amount": data.get("amount"),
            "priority": data.get("priority"),
            "expiry_date": data.get("expiry_date_utc"),
            "idempotency_key": data.get("idempotency_key"),
            "description": data.get("description", ""),
            "metadata": data.get("metadata"),
            "bonus_credits": data.get("bonus_credits_to_add"),
            "bonus_expiry_date": data.get("bonus_credits_expiry_date_utc"),
        }


# The ledger.

TRANSACTION_EXAMPLE = {
    "id": "wtxn_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "wallet_id": WALLET_EXAMPLE["id"],
    "customer_id": WALLET_EXAMPLE["customer_id"],
    "type": "debit",
    "transaction_status": "completed",
    "transaction_reason": "INVOICE_PAYMENT",
    "credit_amount": "35.5",
    "amount": "35.5",
    "currency": "usd",
    "conversion_rate": "1",
    "priority": None,
    "expiry_date": None,
    "credits_available": "0",
    "consumption_breakdown": [
        {"credit_transaction_id": "wtxn_01JD7X8Y9ZK2M3N4P5Q6R7S8A1", "credits": "10"},
        {"credit_transaction_id": "wtxn_01JD7X8Y9ZK2M3N4P5Q6R7S8A2", "credits": "25.5"},
    ],
    "reference_type": "INVOICE",
    "reference_id": INVOICE_EXAMPLE["id"],
    "parent_transaction_id": None,
    "idempotency_key": "invoice:inv_01JD7X8Y9ZK2M3N4P5Q6R7S8T9:prepaid",
    "description": "Prepaid credits applied to usage on INV-202612-00001.",
    "metadata": {},
    "status": "published",
    "created_at": "2026-12-01T00:05:00Z",
    "updated_at": "2026-12-01T00:05:00Z",
}


class ConsumptionSerializer(serializers.Serializer):
    credit_transaction_id = serializers.CharField(source="credit_id")
    credits = Amount()


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Credits applied to an invoice", value=TRANSACTION_EXAMPLE, response_only=True
        )
    ]
)
class TransactionSerializer(serializers.ModelSerializer):
    """``credits_available``: what is left of a completed, unexpired credit block; 0 for
    debits and for pending, failed or expired blocks. ``consumption_breakdown``: which
    blocks a debit took from, in the order it took them. Running balances
    (``credit_balance_before`` / ``_after``) are not sent."""

    customer_id = serializers.CharField(source="wallet.customer_id")
    currency = serializers.CharField(source="wallet.currency")
    conversion_rate = Amount(source="wallet.conversion_rate")
    credit_amount = Amount()
    amount = Amount()
    credits_available = serializers.SerializerMethodField()
    consumption_breakdown = ConsumptionSerializer(source="consumptions", many=True)
    reference_type = serializers.SerializerMethodField()
    reference_id = serializers.CharField(source="invoice_id", allow_null=True)
    parent_transaction_id = serializers.SerializerMethodField()
    metadata = Metadata()
    status = Constant("published")

    class Meta:
        model = WalletTransaction
        fields = [
            "id",
            "wallet_id",
            "customer_id",
            "type",
            "transaction_status",
            "transaction_reason",
            "credit_amount",
            "amount",
            "currency",
            "conversion_rate",
            "priority",
            "expiry_date",
            "credits_available",
            "consumption_breakdown",
            "reference_type",
            "reference_id",
            "parent_transaction_id",
            "idempotency_key",
            "description",
            "metadata",
            "status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_credits_available(self, entry) -> str:
        usable = (
            entry.type == WalletTransaction.Type.CREDIT
            and entry.transaction_status == WalletTransaction.Status.COMPLETED
            and (entry.expiry_date is None or entry.expiry_date > self.context["now"])
        )
        return _number(entry.remaining if usable else ZERO)

    @extend_schema_field({"type": "string", "enum": ["INVOICE"], "nullable": True})
    def get_reference_type(self, entry) -> str | None:
        return "INVOICE" if entry.invoice_id else None

    @extend_schema_field({"type": "string", "nullable": True})
    def get_parent_transaction_id(self, entry) -> str | None:
        return (entry.metadata or {}).get("parent_transaction_id")


def transactions():
    return ledger.with_remaining(
        WalletTransaction.objects.select_related("wallet").prefetch_related("consumptions")
    ).order_by("-created_at", "-id")


def usable_now(queryset, credits_gt: Decimal, now: datetime):
    """Completed credit blocks, unexpired at ``now``, with more than ``credits_gt`` left."""
    return queryset.filter(
        Q(expiry_date__isnull=True) | Q(expiry_date__gt=now),
        type=WalletTransaction.Type.CREDIT,
        transaction_status=WalletTransaction.Status.COMPLETED,
        remaining__gt=credits_gt,
    )


class PriorityFilter(django_filters.NumberFilter):
    field_class = forms.IntegerField


class TransactionFilter(django_filters.FilterSet):
    id = django_filters.CharFilter()
    type = django_filters.ChoiceFilter(choices=WalletTransaction.Type.choices)
    transaction_status = django_filters.ChoiceFilter(choices=WalletTransaction.Status.choices)
    transaction_reason = django_filters.ChoiceFilter(choices=Reason.choices)
    reference_type = django_filters.ChoiceFilter(
        choices=[("INVOICE", "INVOICE")], method="by_reference_type"
    )
    reference_id = django_filters.CharFilter(field_name="invoice_id")
    priority = PriorityFilter(min_value=0, max_value=MAX_PRIORITY)
    expiry_date_before = MomentFilter("expiry_date", lookup_expr="lt")
    expiry_date_after = MomentFilter("expiry_date", lookup_expr="gt")
    credits_available_gt = django_filters.NumberFilter(
        method="by_credits_available", max_digits=28, decimal_places=12
    )
    start_time = MomentFilter("created_at", lookup_expr="gte")
    end_time = MomentFilter("created_at", lookup_expr="lt")

    class Meta:
        model = WalletTransaction
        fields = ["id", "type", "transaction_status", "transaction_reason", "priority"]

    def by_reference_type(self, queryset, name, value):
        return queryset.filter(invoice__isnull=False)

    def by_credits_available(self, queryset, name, value):
        return usable_now(queryset, value, timezone.now())


class TransactionSearchSerializer(Body, SearchRequest):
    id = serializers.CharField(required=False)
    type = serializers.ChoiceField(WalletTransaction.Type.choices, required=False)
    transaction_status = serializers.ChoiceField(WalletTransaction.Status.choices, required=False)
    transaction_reason = serializers.ChoiceField(Reason.choices, required=False)
    reference_type = serializers.ChoiceField(["INVOICE"], required=False)
    reference_id = serializers.CharField(required=False)
    priority = serializers.IntegerField(required=False, min_value=0, max_value=MAX_PRIORITY)
    expiry_date_before = Moment(required=False)
    expiry_date_after = Moment(required=False)
    credits_available_gt = Credits(sign=None, required=False)
    start_time = Moment(required=False)
    end_time = Moment(required=False)
    order = serializers.ChoiceField(["asc", "desc"], required=False)

    lookups = {
        "id": "id",
        "type": "type",
        "transaction_status": "transaction_status",
        "transaction_reason": "transaction_reason",
        "reference_type": "invoice__isnull",
        "reference_id": "invoice_id",
        "priority": "priority",
        "expiry_date_before": "expiry_date__lt",
        "expiry_date_after": "expiry_date__gt",
        "start_time": "created_at__gte",
        "end_time": "created_at__lt",
    }

    def validate_reference_type(self, value):
        return False  # invoice__isnull=False

    def filter(self, queryset):
        queryset = super().filter(queryset)
        data = self.validated_data
        if "credits_available_gt" in data:
            queryset = usable_now(queryset, data["credits_available_gt"], timezone.now())
        if data.get("order") == "asc":
            queryset = queryset.order_by("created_at", "id")
        return queryset


TOP_UP_EXAMPLE = {
    "wallet": WALLET_EXAMPLE,
    "wallet_transaction": {
        **TRANSACTION_EXAMPLE,
        "type": "credit",
        "transaction_reason": "PURCHASED_CREDIT_DIRECT",
        "credit_amount": "50",
        "amount": "50",
        "priority": 1,
        "expiry_date": "2027-01-01T00:00:00Z",
        "credits_available": "50",
        "consumption_breakdown": [],
        "reference_type": None,
        "reference_id": None,
        "idempotency_key": "order-1042",
        "description": "",
    },
    "invoice_id": None,
}


class TopUpResultSerializer(serializers.Serializer):
    wallet = WalletSerializer()
    wallet_transaction = TransactionSerializer()
    invoice_id = serializers.CharField(allow_null=True)


class WalletViewSet(viewsets.GenericViewSet):
    """``/v1/wallets``: one open wallet per customer and currency."""

    queryset = Wallet.objects.select_related("customer")
    serializer_class = WalletSerializer
    lookup_value_converter = "id"
    pagination_class = ListPagination
    filter_backends = []
    error_names = {
        "auto_topup_threshold": "auto_topup.threshold",
        "auto_topup_amount": "auto_topup.amount",
        "credits": "credits_to_add",
        "conversion_rate": "conversion_rate",
    }

    def output(self, wallet, serializer=WalletSerializer, **context):
        context = {**self.get_serializer_context(), **context}
        return serializer(wallet, context=context).data

    @extend_schema(
        description="Creates a wallet, with its initial credits (a FREE_CREDIT_GRANT block). "
        "A second open wallet in the same currency is a 400 (code already_exists).",
        request=WalletCreateSerializer,
        responses={200: WalletSerializer},
    )
    def create(self, request):
        body = WalletCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        _refuse_duplicate(body.validated_data)
        try:
            wallet = wallets.wallet_create(**body.validated_data)
        except IntegrityError:  # an open wallet committed meanwhile
            _refuse_duplicate(body.validated_data)
            raise
        return Response(self.output(self.get_queryset().get(pk=wallet.pk)))

    @extend_schema(
        description="One wallet, with its real-time balance.", responses={200: WalletSerializer}
    )
    def retrieve(self, request, pk):
        return Response(self.output(self.get_object(), real_time=True))

    @extend_schema(
        description="Changes a wallet's name, description, metadata, auto top-up or alerts.",
        request=WalletUpdateSerializer,
        responses={200: WalletSerializer},
    )
    def update(self, request, pk):
        wallet = self.get_object()
        body = WalletUpdateSerializer(data=request.data, context={"wallet": wallet})
        body.is_valid(raise_exception=True)
        wallets.wallet_update(wallet=wallet, **body.validated_data)
        return Response(self.output(self.get_object()))

    @extend_schema(
        description="The wallets, filtered and paged by a JSON body.",
        request=WalletSearchSerializer,
        responses=OpenApiResponse(
            page_of(WalletSerializer), examples=page_examples("One wallet", WALLET_EXAMPLE)
        ),
    )
    @action(detail=False, methods=["post"], url_path="search")
    def search(self, request):
        self.search_body = WalletSearchSerializer(data=request.data)
        self.search_body.is_valid(raise_exception=True)
        paginator = BodyPagination()
        page = paginator.paginate_queryset(
            self.search_body.filter(self.get_queryset()), request, view=self
        )
        return paginator.get_paginated_response(
            WalletSerializer(page, many=True, context=self.get_serializer_context()).data
        )

    @extend_schema(
        description="Adds credits. PURCHASED_CREDIT_DIRECT, FREE_CREDIT_GRANT and "
        "PURCHASED_CREDIT_BONUS count at once; PURCHASED_CREDIT_INVOICED finalizes a purchase "
        "invoice (invoice_id) and the credits count once it is paid "
        "(PUT /v1/invoices/{id}/payment). A replayed idempotency_key adds nothing.",
        request=TopUpSerializer,
        responses={200: TopUpResultSerializer},
        examples=[
            OpenApiExample(
                "50 credits first in line, until 2027",
                value={
                    "transaction_reason": "PURCHASED_CREDIT_DIRECT",
                    "credits_to_add": "50",
                    "priority": 1,
                    "expiry_date_utc": "2027-01-01T00:00:00Z",
                    "idempotency_key": "order-1042",
                },
                request_only=True,
            ),
            OpenApiExample("Topped up", value=TOP_UP_EXAMPLE, response_only=True),
        ],
    )
    @action(detail=True, methods=["post"], url_path="top-up")
    def top_up(self, request, pk):
        wallet = self.get_object()
        body = TopUpSerializer(data=request.data, context={"wallet": wallet})
        body.is_valid(raise_exception=True)
        purchase, _ = wallets.wallet_purchase(wallet=wallet, **body.validated_data)
        return Response(
            {
                "wallet": self.output(self.get_object()),
                "wallet_transaction": TransactionSerializer(
                    transactions().get(pk=purchase.pk), context={"now": timezone.now()}
                ).data,
                "invoice_id": purchase.invoice_id,
            }
        )

    @extend_schema(
        description="The ledger's balance, and what the open periods' usage would use of it "
        "now (current_period_usage), read live from the events: exact, whatever the lag of "
        "the invoice drafts.",
        responses={200: WalletBalanceSerializer},
    )
    @action(detail=True, methods=["get"], url_path="balance/real-time")
    def balance(self, request, pk):
        return Response(self.output(self.get_object(), WalletBalanceSerializer, real_time=True))

    @extend_schema(
        description="Debits what is left (WALLET_TERMINATION) and closes the wallet.",
        request=None,
        responses={200: WalletSerializer},
    )
    @action(detail=True, methods=["post"])
    def terminate(self, request, pk):
        wallets.wallet_terminate(wallet=self.get_object())
        return Response(self.output(self.get_object()))

    @extend_schema(
        description="Every wallet's ledger, filtered and paged by a JSON body, newest first.",
        request=TransactionSearchSerializer,
        responses=OpenApiResponse(
            page_of(TransactionSerializer),
            examples=page_examples("A debit", TRANSACTION_EXAMPLE),
        ),
    )
    @action(detail=False, methods=["post"], url_path="transactions/search")
    def transactions_search(self, request):
        self.search_body = TransactionSearchSerializer(data=request.data)
        self.search_body.is_valid(raise_exception=True)
        paginator = BodyPagination()
        page = paginator.paginate_queryset(
            self.search_body.filter(transactions()), request, view=self
        )
        return paginator.get_paginated_response(
            TransactionSerializer(page, many=True, context={"now": timezone.now()}).data
        )


@extend_schema_view(
    get=extend_schema(description="The wallet's ledger, newest first, filtered by the query.")
)
class WalletTransactionsView(generics.ListAPIView):
    """``GET /v1/wallets/{id}/transactions``."""

    serializer_class = TransactionSerializer
    filterset_class = TransactionFilter
    pagination_class = ListPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema's look at the view
            return WalletTransaction.objects.none()
        wallet = get_object_or_404(Wallet, pk=self.kwargs["pk"])
        return transactions().filter(wallet=wallet)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": timezone.now()}


class CustomerWalletsQuery(serializers.Serializer):
    id = serializers.CharField(required=False)
    lookup_key = serializers.CharField(required=False, help_text="The customer's external id.")
    include_real_time_balance = serializers.BooleanField(required=False, default=False)
    from_cache = serializers.BooleanField(
        required=False, help_text="Accepted; Tally has no cache and always answers live."
    )
    expand = serializers.CharField(required=False, help_text="Accepted; nothing to expand.")


# A list answer's example is one item: drf-spectacular lists it.
WALLET_LIST_EXAMPLES = [OpenApiExample("One wallet", value=WALLET_EXAMPLE, response_only=True)]


def customer_wallets(request, customer: Customer, real_time: bool) -> Response:
    rows = Wallet.objects.filter(customer=customer).select_related("customer")
    return Response(WalletSerializer(rows, many=True, context={"real_time": real_time}).data)


class CustomerWalletsView(APIView):
    """A plain list, as the SDK reads it; ``include_real_time_balance`` fills the real-time
    fields."""

    @extend_schema(
        parameters=[CustomerWalletsQuery],
        responses={200: WalletSerializer(many=True), 400: error_response(400)},
        examples=WALLET_LIST_EXAMPLES,
    )
    def get(self, request, pk):
        query = CustomerWalletsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        customer = get_object_or_404(Customer, pk=pk)
        return customer_wallets(
            request, customer, query.validated_data["include_real_time_balance"]
        )


class CustomerWalletsLookupView(APIView):
    """By ``id`` or by ``lookup_key`` (the customer's external id)."""

    @extend_schema(
        operation_id="customers_wallets_lookup",
        parameters=[CustomerWalletsQuery],
        responses={
            200: WalletSerializer(many=True),
            400: error_response(400),
            404: error_response(404),
        },
        examples=WALLET_LIST_EXAMPLES,
    )
    def get(self, request):
        query = CustomerWalletsQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        if "id" in data:
            customer = get_object_or_404(Customer, pk=data["id"])
        elif "lookup_key" in data:
            customer = get_object_or_404(Customer, external_id=data["lookup_key"])
        else:
            raise serializers.ValidationError({"id": "Give id or lookup_key."})
        return customer_wallets(request, customer, data["include_real_time_balance"])


# Credit grants.

GRANT_EXAMPLE = {
    "id": "cg_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "name": "$5 of free credits every month",
    "scope": "PLAN",
    "plan_id": "plan_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "subscription_id": None,
    "credits": "5",
    "cadence": "RECURRING",
    "expiration_type": "BILLING_CYCLE",
    "expiration_duration": None,
    "expiration_duration_unit": None,
    "priority": 1,
    "metadata": {},
    "status": "published",
    "created_at": "2026-11-01T00:00:00Z",
    "updated_at": "2026-11-01T00:00:00Z",
}


@extend_schema_serializer(
    examples=[OpenApiExample("Monthly free credits", value=GRANT_EXAMPLE, response_only=True)]
)
class CreditGrantSerializer(serializers.ModelSerializer):
    plan_id = serializers.CharField(allow_null=True)
    subscription_id = serializers.CharField(allow_null=True)
    credits = Amount()
    expiration_duration_unit = serializers.SerializerMethodField()
    metadata = Metadata()

    class Meta:
        model = CreditGrant
        fields = [
            "id",
            "name",
            "scope",
            "plan_id",
            "subscription_id",
            "credits",
            "cadence",
            "expiration_type",
            "expiration_duration",
            "expiration_duration_unit",
            "priority",
            "metadata",
            "status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {"type": "string", "enum": CreditGrant.DurationUnit.values, "nullable": True}
    )
    def get_expiration_duration_unit(self, grant) -> str | None:
        return grant.expiration_duration_unit or None


ONCE_PER_PERIOD = (
    "RECURRING grants are given once per billing period of the subscription; "
    "period and period_count are not implemented."
)
REFUSED_GRANT_FIELDS = {"period": ONCE_PER_PERIOD, "period_count": ONCE_PER_PERIOD}


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "$5 every month, expiring at period end",
            value={
                "name": GRANT_EXAMPLE["name"],
                "scope": "PLAN",
                "plan_id": GRANT_EXAMPLE["plan_id"],
                "credits": "5",
                "cadence": "RECURRING",
                "expiration_type": "BILLING_CYCLE",
                "priority": 1,
            },
            request_only=True,
        )
    ]
)
class CreditGrantCreateSerializer(Body):
    name = serializers.CharField(max_length=255)
    scope = serializers.ChoiceField(CreditGrant.Scope.choices)
    plan_id = ExistingId(Plan, required=False)
    subscription_id = ExistingId(Subscription, required=False)
    credits = Credits()
    cadence = serializers.ChoiceField(CreditGrant.Cadence.choices)
    expiration_type = serializers.ChoiceField(
        CreditGrant.Expiry.choices, default=CreditGrant.Expiry.NEVER
    )
    expiration_duration = serializers.IntegerField(required=False)  # bounds: the model's
    expiration_duration_unit = serializers.ChoiceField(
        CreditGrant.DurationUnit.choices, required=False
    )
    priority = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_PRIORITY
    )
    metadata = Metadata(required=False)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            refused = {name: [why] for name, why in REFUSED_GRANT_FIELDS.items() if name in data}
            if refused:
                raise serializers.ValidationError(refused)
        return super().to_internal_value(data)

    def validate(self, data):
        target = {"PLAN": "plan_id", "SUBSCRIPTION": "subscription_id"}[data["scope"]]
        other = "subscription_id" if target == "plan_id" else "plan_id"
        if target not in data:
            raise serializers.ValidationError({target: f"A {data['scope']} grant needs it."})
        if other in data:
            raise serializers.ValidationError({other: f"A {data['scope']} grant takes {target}."})
        duration = [n for n in ("expiration_duration", "expiration_duration_unit") if n in data]
        if data["expiration_type"] == CreditGrant.Expiry.DURATION and len(duration) < 2:
            raise serializers.ValidationError(
                {
                    n: "DURATION expiry needs it."
                    for n in ("expiration_duration", "expiration_duration_unit")
                    if n not in data
                }
            )
        if data["expiration_type"] != CreditGrant.Expiry.DURATION and duration:
            raise serializers.ValidationError(
                {n: "It goes with expiration_type DURATION." for n in duration}
            )
        data["plan"] = data.pop("plan_id", None)
        data["subscription"] = data.pop("subscription_id", None)
        return data


class CreditGrantUpdateSerializer(Body):
    name = serializers.CharField(required=False, max_length=255)
    metadata = Metadata(required=False)


class CreditGrantFilter(django_filters.FilterSet):
    plan_id = django_filters.CharFilter()
    subscription_id = django_filters.CharFilter()
    scope = django_filters.ChoiceFilter(choices=CreditGrant.Scope.choices)
    status = django_filters.ChoiceFilter(choices=CreditGrant.Status.choices)

    class Meta:
        model = CreditGrant
        fields = ["plan_id", "subscription_id", "scope", "status"]


class CreditGrantSearchSerializer(Body, SearchRequest):
    credit_grant_ids = Ids(required=False, max_length=MAX_TEXT)
    plan_ids = Ids(required=False, max_length=MAX_TEXT)
    subscription_ids = Ids(required=False, max_length=MAX_TEXT)
    scope = serializers.ChoiceField(CreditGrant.Scope.choices, required=False)
    status = serializers.ChoiceField(CreditGrant.Status.choices, required=False)

    lookups = {
        "credit_grant_ids": "id__in",
        "plan_ids": "plan_id__in",
        "subscription_ids": "subscription_id__in",
        "scope": "scope",
        "status": "status",
    }


@resource_schema
class CreditGrantViewSet(CreatableResourceViewSet):
    """``/v1/creditgrants``. DELETE archives: no further grants; credits given stay."""

    queryset = CreditGrant.objects.all()
    serializer_class = CreditGrantSerializer
    filterset_class = CreditGrantFilter
    search_class = CreditGrantSearchSerializer
    create_serializer_class = CreditGrantCreateSerializer
    create_service = staticmethod(credits.credit_grant_create)

    @extend_schema(
        description="Renames a grant or changes its metadata.",
        request=CreditGrantUpdateSerializer,
        responses={200: CreditGrantSerializer},
    )
    def update(self, request, pk):
        grant = self.get_object()
        body = CreditGrantUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        credits.credit_grant_update(grant=grant, **body.validated_data)
        return Response(self.output(self.get_object()))

    @extend_schema(
        description="Archives the grant: no further grants; the credits given stay.",
        request=None,
        responses={200: MessageSerializer},
        examples=[OpenApiExample("Archived", value={"message": "credit grant archived"})],
    )
    def destroy(self, request, pk):
        grant = self.get_object()
        NoBody(data=request.data or {}).is_valid(raise_exception=True)
        credits.credit_grant_archive(grant=grant)
        return Response({"message": "credit grant archived"})


class PlanCreditGrantsView(APIView):
    """A plan's credit grants, archived ones included (see ``status``)."""

    @extend_schema(
        responses=OpenApiResponse(
            page_of(CreditGrantSerializer),
            examples=page_examples("Monthly free credits", GRANT_EXAMPLE),
        ),
    )
    def get(self, request, pk):
        plan = get_object_or_404(Plan, pk=pk)
        items = CreditGrantSerializer(plan.credit_grants.all(), many=True).data
        return Response(one_page(items))


# Paying an invoice outside Tally.


class PaymentStatusSerializer(Body):
    payment_status = serializers.ChoiceField(
        [Invoice.PaymentStatus.PENDING, Invoice.PaymentStatus.SUCCEEDED, "FAILED"]
    )
    amount = Credits(
        sign="zero", required=False, help_text="With SUCCEEDED: must be what remains to pay."
    )


class InvoicePaymentView(APIView):
    """``PUT /v1/invoices/{id}/payment``: a payment made outside Tally. SUCCEEDED pays what
    remains and makes a credit purchase's credits usable."""

    @extend_schema(
        request=PaymentStatusSerializer,
        responses={200: InvoiceSerializer},
        examples=[
            OpenApiExample(
                "Paid", value={"payment_status": "SUCCEEDED", "amount": "23.00"}, request_only=True
            ),
            OpenApiExample(
                "The paid invoice",
                value={
                    **INVOICE_EXAMPLE,
                    "payment_status": "SUCCEEDED",
                    "amount_paid": "23.00",
                    "amount_remaining": "0.00",
                    "paid_at": "2026-12-02T09:00:00Z",
                },
                response_only=True,
            ),
        ],
    )
    def put(self, request, pk):
        invoice = get_object_or_404(Invoice, pk=pk)
        body = PaymentStatusSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        wallets.invoice_payment_update(invoice=invoice, **body.validated_data)
        return Response(InvoiceSerializer(Invoice.objects.get(pk=pk)).data)
