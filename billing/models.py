import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils import timezone
from solo.models import SingletonModel

from catalog import pricing
from catalog.ids import id_factory
from catalog.models import AMOUNT, BillingPeriod, Feature, Meter, Plan, Price
from catalog.money import format_money, in_minor_units, minor_unit_exponent
from metering.models import Customer


class Subscription(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        CANCELLED = "cancelled"

    class Cycle(models.TextChoices):
        ANNIVERSARY = "anniversary"
        CALENDAR = "calendar"

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("subs"), editable=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    currency = models.CharField(max_length=3, default="usd")
    billing_period = models.CharField(
        max_length=16, choices=BillingPeriod.choices, default=BillingPeriod.MONTHLY
    )
    billing_period_count = models.PositiveIntegerField(default=1)
    billing_cycle = models.CharField(
        max_length=16, choices=Cycle.choices, default=Cycle.ANNIVERSARY
    )
    billing_anchor = models.DateTimeField()
    start_date = models.DateTimeField()
    end_date = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    current_period_start = models.DateTimeField()
    current_period_end = models.DateTimeField()
    cancel_at_period_end = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # When the usage billed since the last invoice of the cycle, less prepaid credits, reaches
    # this, an interim invoice is finalized (``billing.thresholds``). Blank: never.
    auto_invoice_threshold = models.DecimalField(
        **AMOUNT,
        null=True,
        blank=True,
        help_text="Finalize an interim invoice when the usage amount due since the last one "
        "reaches this, in the subscription's currency. Blank: only at the period's end.",
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "current_period_end"], name="subs_due_idx")]

    def __str__(self):
        return f"{self.customer} on {self.plan}"

    def clean(self):
        threshold = self.auto_invoice_threshold
        if threshold is None:
            return
        currency = self.currency or "usd"
        if threshold <= 0:
            message = "It must be more than 0."
        elif not in_minor_units(threshold, currency):
            exponent = minor_unit_exponent(currency)
            message = f"{currency.upper()} amounts have at most {exponent} decimals."
        else:
            return
        raise ValidationError({"auto_invoice_threshold": message})


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "DRAFT"
        FINALIZED = "FINALIZED"
        VOIDED = "VOIDED"
        SKIPPED = "SKIPPED"

    class PaymentStatus(models.TextChoices):
        PENDING = "PENDING"
        SUCCEEDED = "SUCCEEDED"
        FAILED = "FAILED"
        VOIDED = "VOIDED"

    class BillingReason(models.TextChoices):
        SUBSCRIPTION_CREATE = "SUBSCRIPTION_CREATE"  # the first period's advance charges
        SUBSCRIPTION_CYCLE = "SUBSCRIPTION_CYCLE"
        MANUAL = "MANUAL"  # a purchase of credits
        # A part of a cycle closed early because its usage reached the subscription's
        # auto_invoice_threshold; it bills as any part closed early (``CYCLE_REASONS``).
        AUTO_INVOICE_THRESHOLD = "AUTO_INVOICE_THRESHOLD"

    class Type(models.TextChoices):
        SUBSCRIPTION = "SUBSCRIPTION"
        CREDIT = "CREDIT"  # a purchase of prepaid credits

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("inv"), editable=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, null=True, blank=True, related_name="invoices"
    )
    invoice_type = models.CharField(max_length=16, choices=Type.choices, default=Type.SUBSCRIPTION)
    invoice_status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    payment_status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    billing_reason = models.CharField(
        max_length=32, choices=BillingReason.choices, default=BillingReason.SUBSCRIPTION_CYCLE
    )
    currency = models.CharField(max_length=3)
    # subtotal is the sum of the lines; total is less the prepaid credits applied to them.
    subtotal = models.DecimalField(**AMOUNT, default=Decimal(0))
    # On a draft, what a PRE_PAID wallet would apply now; once finalized, what it applied.
    total_prepaid_credits_applied = models.DecimalField(**AMOUNT, default=Decimal(0))
    total = models.DecimalField(**AMOUNT, default=Decimal(0))
    amount_paid = models.DecimalField(**AMOUNT, default=Decimal(0))
    paid_at = models.DateTimeField(null=True, blank=True)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    invoice_number = models.CharField(max_length=32, unique=True, null=True, blank=True)
    finalized_at = models.DateTimeField(null=True, blank=True)
    due_date = models.DateTimeField(null=True, blank=True)  # set on finalizing
    voided_at = models.DateTimeField(null=True, blank=True)
    last_computed_at = models.DateTimeField(null=True, blank=True)
    # The customer's events with an id up to this were all read by the last computation;
    # on a finalized invoice, those above it are late usage.
    usage_fence = models.BigIntegerField(null=True, blank=True, editable=False)
    # An early close splits a billing cycle in parts: the part closed early bills the usage so
    # far and no fixed fee; the draft it opens continues the cycle from ``cycle_start``.
    closed_early = models.BooleanField(default=False, editable=False)
    cycle_start = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "period_start", "period_end", "billing_reason"],
                name="one_invoice_per_subscription_period",
            )
        ]

    def __str__(self):
        return self.invoice_number or f"{self.invoice_status} {self.period_start:%Y-%m-%d}"

    # The reasons of the invoices that bill a cycle's usage and fees, in one or more parts.
    CYCLE_REASONS = (BillingReason.SUBSCRIPTION_CYCLE, BillingReason.AUTO_INVOICE_THRESHOLD)

    @property
    def is_draft(self) -> bool:
        return self.invoice_status == self.Status.DRAFT

    @staticmethod
    def due_date_for(*, finalized_at: datetime) -> datetime:
        """Payment is due TALLY_PAYMENT_TERMS_DAYS after the invoice is finalized."""
        return finalized_at + timedelta(days=settings.TALLY_PAYMENT_TERMS_DAYS)

    @property
    def amount_due(self) -> Decimal:
        """What the customer owes on it: nothing once voided or skipped, nor when its total is
        negative (a credit, see ``credit``)."""
        if self.invoice_status in (self.Status.VOIDED, self.Status.SKIPPED):
            return Decimal(0)
        return max(self.total, Decimal(0))

    @property
    def credit(self) -> Decimal:
        """What a negative total gives back: a later part of a cycle closed early whose MAX or
        LATEST reading fell below what an earlier part billed. Shown, not yet applied."""
        if self.invoice_status in (self.Status.VOIDED, self.Status.SKIPPED):
            return Decimal(0)
        return max(-self.total, Decimal(0))

    @property
    def amount_remaining(self) -> Decimal:
        return max(self.amount_due - self.amount_paid, Decimal(0))


class InvoiceLineItem(models.Model):
    """One charge, with a snapshot of what priced it: it explains itself however the catalog
    changes later. Readers use the snapshot (``terms``, ``meter_definition``), never ``price``."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="line_items")
    price = models.ForeignKey(
        Price, on_delete=models.PROTECT, null=True, related_name="invoice_lines"
    )
    meter = models.ForeignKey(Meter, on_delete=models.PROTECT, null=True, related_name="+")
    price_type = models.CharField(max_length=8)
    invoice_cadence = models.CharField(max_length=8, default=Price.Cadence.ARREAR)
    display_name = models.CharField(max_length=255)
    quantity = models.DecimalField(max_digits=40, decimal_places=12)
    amount = models.DecimalField(**AMOUNT)
    currency = models.CharField(max_length=3)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    terms = models.JSONField(default=dict)  # pricing.terms_to_json of the price
    meter_definition = models.JSONField(null=True, blank=True)  # Meter.definition()
    unit_singular = models.CharField(max_length=64, blank=True)
    unit_plural = models.CharField(max_length=64, blank=True)
    packages = models.DecimalField(max_digits=40, decimal_places=12, null=True, blank=True)
    event_count = models.BigIntegerField(default=0)
    # On the draft continuing a cycle closed early: what the earlier parts billed for this
    # price. ``amount`` is what the cycle's whole quantity costs, less this.
    billed_before = models.DecimalField(**AMOUNT, default=Decimal(0))

    class Meta:
        ordering = ["id"]

    def __str__(self):
        return f"{self.display_name}: {format_money(self.amount, self.currency)}"

    def priced_terms(self) -> pricing.Terms:
        return pricing.terms_from_json(self.terms)

    def metered_by(self) -> Meter | None:
        """The meter as it was when this line was priced, unsaved."""
        if self.meter_definition is None:
            return None
        return Meter.from_definition(self.meter_definition)


class InvoiceSequence(models.Model):
    """The last number used per prefix (``INV-202611``): gapless under concurrency."""

    prefix = models.CharField(max_length=16, primary_key=True)
    last = models.PositiveIntegerField(default=0)


@dataclass(frozen=True)
class IssuerDetails:
    name: str
    address_lines: tuple[str, ...]
    email: str
    tax_id: str


class Issuer(SingletonModel):
    """The operator's company as its invoices name it, edited in the admin. A blank field
    falls back to its TALLY_ISSUER_* setting."""

    name = models.CharField(max_length=255, blank=True)
    address = models.TextField(blank=True, help_text="As printed, one line per line.")
    email = models.EmailField(blank=True)
    tax_id = models.CharField("Tax ID", max_length=64, blank=True)

    class Meta:
        verbose_name = "invoice issuer"

    def __str__(self):
        return "Invoice issuer"

    def details(self) -> IssuerDetails:
        address = self.address or "\n".join(settings.TALLY_ISSUER_ADDRESS)
        return IssuerDetails(
            name=self.name or settings.TALLY_ISSUER_NAME,
            address_lines=tuple(line.strip() for line in address.splitlines() if line.strip()),
            email=self.email or settings.TALLY_ISSUER_EMAIL,
            tax_id=self.tax_id or settings.TALLY_ISSUER_TAX_ID,
        )


CREDITS = {"max_digits": 28, "decimal_places": 12}


class AlertState(models.TextChoices):
    """Flexprice's alert states, least severe first."""

    OK = "ok"
    INFO = "info"
    WARNING = "warning"
    IN_ALARM = "in_alarm"  # Flexprice's name for the critical level


class Wallet(models.Model):
    """A customer's prepaid credits in one currency. Its balance is never stored: it is the
    sum of its ledger's credit blocks, less what debits consumed of them (``billing.ledger``).
    """

    class Type(models.TextChoices):
        PRE_PAID = "PRE_PAID"  # credits reduce usage charges on invoices
        POST_PAID = "POST_PAID"  # credits pay finalized invoices

    class Status(models.TextChoices):
        ACTIVE = "active"
        FROZEN = "frozen"
        CLOSED = "closed"

    AlertState = AlertState

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("wallet"), editable=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="wallets")
    currency = models.CharField(max_length=3)
    wallet_type = models.CharField(max_length=16, choices=Type.choices, default=Type.PRE_PAID)
    wallet_status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    name = models.CharField(max_length=255, blank=True)
    description = models.TextField(blank=True)
    conversion_rate = models.DecimalField(
        **CREDITS, default=Decimal(1), help_text="Currency units per credit."
    )
    # Auto top-up, in credits: when the real-time credit balance falls to the threshold, add
    # the amount, at most once per cooldown.
    auto_topup_enabled = models.BooleanField(default=False)
    auto_topup_threshold = models.DecimalField(**CREDITS, null=True, blank=True)
    auto_topup_amount = models.DecimalField(**CREDITS, null=True, blank=True)
    auto_topup_invoicing = models.BooleanField(
        default=False, help_text="Top up through a purchase invoice; credits come when it is paid."
    )
    auto_topup_cooldown = models.DurationField(default=timedelta(0))
    last_auto_topup_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Cleared by an auto top-up, set again once the real-time balance is above the threshold:
    # one crossing tops up once.
    auto_topup_armed = models.BooleanField(default=True, editable=False)
    alert_settings = models.JSONField(default=dict, blank=True)  # Flexprice's AlertSettings
    alert_state = models.CharField(
        max_length=16, choices=AlertState.choices, default=AlertState.OK, editable=False
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "currency"],
                condition=~models.Q(wallet_status="closed"),
                name="one_open_wallet_per_customer_currency",
                violation_error_message="The customer already has a wallet in this currency.",
            ),
            models.CheckConstraint(
                condition=models.Q(conversion_rate__gt=0), name="wallet_conversion_rate_positive"
            ),
        ]

    def __str__(self):
        return self.name or f"{self.customer} {self.currency.upper()} wallet"

    def clean(self):
        if not self.auto_topup_enabled:
            return
        errors = {}
        if self.auto_topup_threshold is None:
            errors["auto_topup_threshold"] = "Auto top-up needs a threshold."
        if self.auto_topup_amount is None or self.auto_topup_amount <= 0:
            errors["auto_topup_amount"] = "Auto top-up needs an amount of more than 0 credits."
        elif self.auto_topup_invoicing and self.conversion_rate:
            price = self.auto_topup_amount * self.conversion_rate
            if price != price.quantize(Decimal(1).scaleb(-minor_unit_exponent(self.currency))):
                errors["auto_topup_amount"] = (
                    f"An invoiced top-up of {self.auto_topup_amount.normalize():f} credits costs "
                    f"{price.normalize():f} {self.currency.upper()}, not a whole amount to invoice."
                )
        if errors:
            raise ValidationError(errors)


class WalletTransaction(models.Model):
    """One ledger entry, never changed once completed. A credit is a block of credits that
    debits consume (``CreditConsumption``) in order: priority, then expiry, then age."""

    class Type(models.TextChoices):
        CREDIT = "credit"
        DEBIT = "debit"

    class Status(models.TextChoices):
        PENDING = "pending"  # a purchase whose invoice is not paid yet
        COMPLETED = "completed"
        FAILED = "failed"

    class Reason(models.TextChoices):
        INVOICE_PAYMENT = "INVOICE_PAYMENT"
        FREE_CREDIT_GRANT = "FREE_CREDIT_GRANT"
        SUBSCRIPTION_CREDIT_GRANT = "SUBSCRIPTION_CREDIT_GRANT"
        PURCHASED_CREDIT_INVOICED = "PURCHASED_CREDIT_INVOICED"
        PURCHASED_CREDIT_DIRECT = "PURCHASED_CREDIT_DIRECT"
        PURCHASED_CREDIT_BONUS = "PURCHASED_CREDIT_BONUS"
        CREDIT_EXPIRED = "CREDIT_EXPIRED"
        WALLET_TERMINATION = "WALLET_TERMINATION"
        MANUAL_BALANCE_DEBIT = "MANUAL_BALANCE_DEBIT"
        INVOICE_VOID_REFUND = "INVOICE_VOID_REFUND"

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("wtxn"), editable=False
    )
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="transactions")
    type = models.CharField(max_length=8, choices=Type.choices)
    transaction_status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.COMPLETED
    )
    transaction_reason = models.CharField(max_length=32, choices=Reason.choices)
    credit_amount = models.DecimalField(**CREDITS)  # in credits, > 0
    amount = models.DecimalField(**CREDITS)  # in the wallet's currency
    priority = models.PositiveIntegerField(null=True, blank=True)  # lower is consumed first
    expiry_date = models.DateTimeField(null=True, blank=True)
    invoice = models.ForeignKey(
        Invoice,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="wallet_transactions",
    )
    # NULL, not "", when absent: the unique constraint must not match two absent keys.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    description = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["wallet", "idempotency_key"], name="one_transaction_per_idempotency_key"
            ),
            models.CheckConstraint(
                condition=models.Q(credit_amount__gt=0), name="wallet_transaction_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["wallet", "type", "transaction_status"], name="wtxn_blocks_idx"),
            models.Index(fields=["wallet", "updated_at"], name="wtxn_changed_idx"),
        ]

    def __str__(self):
        sign = "+" if self.type == self.Type.CREDIT else "-"
        return f"{sign}{self.credit_amount.normalize():f} credits ({self.transaction_reason})"


class CreditConsumption(models.Model):
    """How much of one credit block one debit took (Flexprice's consumption breakdown). A
    block's remaining credits are its amount less these: derived, never stored."""

    debit = models.ForeignKey(
        WalletTransaction, on_delete=models.PROTECT, related_name="consumptions"
    )
    credit = models.ForeignKey(
        WalletTransaction, on_delete=models.PROTECT, related_name="consumed_by"
    )
    credits = models.DecimalField(**CREDITS)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credits__gt=0), name="credit_consumption_positive"
            ),
            models.UniqueConstraint(fields=["debit", "credit"], name="one_consumption_per_pair"),
        ]


class CreditGrant(models.Model):
    """Credits a plan (or one subscription) gives: once at the start, or every period."""

    class Scope(models.TextChoices):
        PLAN = "PLAN"
        SUBSCRIPTION = "SUBSCRIPTION"

    class Cadence(models.TextChoices):
        ONETIME = "ONETIME"
        RECURRING = "RECURRING"

    class Expiry(models.TextChoices):
        NEVER = "NEVER"
        DURATION = "DURATION"
        BILLING_CYCLE = "BILLING_CYCLE"  # at the end of the period it was granted in

    class DurationUnit(models.TextChoices):
        DAY = "DAY"
        WEEK = "WEEK"
        MONTH = "MONTH"
        YEAR = "YEAR"

    class Status(models.TextChoices):
        PUBLISHED = "published"
        ARCHIVED = "archived"

    id = models.CharField(primary_key=True, max_length=40, default=id_factory("cg"), editable=False)
    name = models.CharField(max_length=255)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.PLAN)
    plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, null=True, blank=True, related_name="credit_grants"
    )
    subscription = models.ForeignKey(
        Subscription,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="credit_grants",
    )
    credits = models.DecimalField(**CREDITS)
    cadence = models.CharField(max_length=16, choices=Cadence.choices)
    expiration_type = models.CharField(max_length=16, choices=Expiry.choices, default=Expiry.NEVER)
    expiration_duration = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(3650)]
    )
    expiration_duration_unit = models.CharField(
        max_length=8, choices=DurationUnit.choices, blank=True
    )
    priority = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PUBLISHED)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.CheckConstraint(condition=models.Q(credits__gt=0), name="credit_grant_positive"),
            models.CheckConstraint(
                condition=(
                    models.Q(scope="PLAN", plan__isnull=False, subscription__isnull=True)
                    | models.Q(scope="SUBSCRIPTION", subscription__isnull=False, plan__isnull=True)
                ),
                name="credit_grant_scope_target",
            ),
        ]

    def __str__(self):
        return self.name

    def clean(self):
        duration = {
            "expiration_duration": self.expiration_duration,
            "expiration_duration_unit": self.expiration_duration_unit,
        }
        if self.expiration_type == self.Expiry.DURATION:
            missing = {k: "A DURATION expiry needs it." for k, v in duration.items() if not v}
            if missing:
                raise ValidationError(missing)
        elif any(duration.values()):
            raise ValidationError(
                {
                    k: f"Only a DURATION expiry has one, not {self.expiration_type}."
                    for k in duration
                }
            )


class CreditGrantApplication(models.Model):
    """One grant given to one subscription for one period: the row that makes it once."""

    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="applications")
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="credit_grant_applications"
    )
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    transaction = models.OneToOneField(
        WalletTransaction, on_delete=models.PROTECT, related_name="grant_application"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["grant", "subscription", "period_start"], name="one_grant_per_period"
            )
        ]


class EventType(models.TextChoices):
    """What Tally tells the operator's systems about, as webhooks (``billing.outbox``)."""

    INVOICE_FINALIZED = "invoice.finalized"
    INVOICE_VOIDED = "invoice.voided"
    INVOICE_PAYMENT_UPDATED = "invoice.payment.updated"
    WALLET_TOPPED_UP = "wallet.topped_up"
    WALLET_BALANCE_LOW = "wallet.balance_low"
    WALLET_CREDITS_EXPIRED = "wallet.credits_expired"
    ALERT_STATE_CHANGED = "alert.state_changed"
    ENTITLEMENT_EXCEEDED = "entitlement.exceeded"
    SUBSCRIPTION_CREATED = "subscription.created"
    SUBSCRIPTION_CANCELLED = "subscription.cancelled"
    BUDGET_THRESHOLD_REACHED = "budget.threshold_reached"


class OutboxEvent(models.Model):
    """One event, written in the transaction of the change it reports, so a crash loses or
    duplicates none; workers deliver it after commit. Its id is the receivers' dedupe key."""

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("evt"), editable=False
    )
    event_type = models.CharField(max_length=64, choices=EventType.choices)
    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    data = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now)
    # Set once its deliveries exist; the sweep fans out events whose dispatch was lost.
    fanned_out_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["event_type", "created_at"], name="outbox_type_idx"),
            models.Index(
                fields=["created_at"],
                condition=models.Q(fanned_out_at__isnull=True),
                name="outbox_unfanned_idx",
            ),
        ]

    def __str__(self):
        return f"{self.event_type} {self.pk}"


def webhook_secret_new() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 24 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


class WebhookEndpoint(models.Model):
    """Where Tally posts its events, signed with ``secret`` (Standard Webhooks)."""

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("whep"), editable=False
    )
    url = models.URLField(max_length=2000, validators=[URLValidator(schemes=["http", "https"])])
    secret = models.CharField(max_length=64, default=webhook_secret_new, editable=False)
    event_types = models.JSONField(
        default=list, blank=True, help_text="The event types sent here; none means all."
    )
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "webhook endpoint"

    def __str__(self):
        return self.url

    def clean(self):
        unknown = sorted(set(self.event_types or []) - set(EventType.values))
        if not isinstance(self.event_types, list) or unknown:
            raise ValidationError({"event_types": f"Unknown event types: {', '.join(unknown)}."})

    def receives(self, event_type: str) -> bool:
        return self.enabled and (not self.event_types or event_type in self.event_types)


class WebhookDelivery(models.Model):
    """One event for one endpoint: retried with backoff until it succeeds or its window ends."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # gave up: the retry window is over

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("whdl"), editable=False
    )
    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due_idx",
            )
        ]

    def __str__(self):
        return f"{self.event_id} → {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One POST of a delivery, as the receiver answered it (or did not)."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    attempted_at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The first 1 KB of the answer.")
    error = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    succeeded = models.BooleanField(default=False)
    replay = models.BooleanField(default=False, help_text="Sent again by an operator.")

    class Meta:
        ordering = ["-attempted_at"]

    def __str__(self):
        return f"{self.status_code or self.error} at {self.attempted_at:%Y-%m-%d %H:%M:%S}"


class EntitlementUsageExceeded(models.Model):
    """A subscription's usage of a feature reached its limit in one usage period. Unique
    per period, so the webhook that reports it is written once whatever runs at once."""

    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="entitlements_exceeded"
    )
    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="+")
    period_start = models.DateTimeField()
    usage = models.DecimalField(max_digits=40, decimal_places=12)
    usage_limit = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "feature", "period_start"],
                name="one_exceeded_per_usage_period",
            )
        ]

    def __str__(self):
        return f"{self.feature_id} over {self.usage_limit} from {self.period_start:%Y-%m-%d}"


def one_per_feature(owner: str, *, whole: tuple, each: tuple) -> list:
    """One row per ``owner`` without a feature, and one per owner and feature: the pair of
    constraints a nullable ``feature`` needs (NULLs are distinct in a unique index)."""
    return [
        models.UniqueConstraint(
            fields=[owner],
            condition=models.Q(feature__isnull=True),
            name=whole[0],
            violation_error_message=f"The {owner} already has {whole[1]}.",
        ),
        models.UniqueConstraint(
            fields=[owner, "feature"],
            name=each[0],
            violation_error_message=f"The {owner} already has {each[1]}.",
        ),
    ]


class AlertEntity(models.TextChoices):
    """What an alert watches (Flexprice's AlertEntityType values Tally evaluates)."""

    WALLET = "wallet"  # its real-time balance; rules live on the wallet (alert_settings)
    SUBSCRIPTION = "subscription"  # the spend of its open period: the proposed subtotal
    FEATURE = "feature"  # a feature's usage on one subscription, in the open period


class AlertType(models.TextChoices):
    LOW_ONGOING_BALANCE = "low_ongoing_balance"  # a wallet's real-time balance
    SUBSCRIPTION_SPEND = "subscription_spend"
    FEATURE_USAGE = "feature_usage"  # Tally's: the SDK has no type for usage


class AlertSetting(models.Model):
    """A rule on a subscription's spend or a feature's usage on a subscription, with its
    current state. ``config`` is Flexprice's AlertSettings with each level's condition
    spelled out; ``billing.alerts`` evaluates it after each recompute."""

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("alert"), editable=False
    )
    entity_type = models.CharField(
        max_length=16,
        choices=[(AlertEntity.SUBSCRIPTION, "subscription"), (AlertEntity.FEATURE, "feature")],
    )
    subscription = models.ForeignKey(
        Subscription, on_delete=models.CASCADE, related_name="alert_settings"
    )
    feature = models.ForeignKey(
        Feature, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    config = models.JSONField(default=dict)
    alert_state = models.CharField(
        max_length=16, choices=AlertState.choices, default=AlertState.OK, editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = one_per_feature(
            "subscription",
            whole=("one_spend_alert_per_subscription", "a spend alert"),
            each=("one_usage_alert_per_subscription_feature", "an alert on this feature"),
        )

    def __str__(self):
        watched = self.feature or "spend"
        return f"{watched} on {self.subscription_id}"

    @property
    def entity_id(self) -> str:
        return self.feature_id if self.feature_id else self.subscription_id

    @property
    def parent_entity_id(self) -> str:
        return self.subscription_id if self.feature_id else ""


class AlertLog(models.Model):
    """One change of an alert's state. ``sequence`` counts the changes of one watched entity:
    unique, so two evaluations of one crossing log it once."""

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("alog"), editable=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="alert_logs")
    entity_type = models.CharField(max_length=16, choices=AlertEntity.choices)
    entity_id = models.CharField(max_length=40)
    parent_entity_type = models.CharField(max_length=16, blank=True)
    parent_entity_id = models.CharField(max_length=40, blank=True)
    alert_type = models.CharField(max_length=32, choices=AlertType.choices)
    alert_status = models.CharField(max_length=16, choices=AlertState.choices)
    previous_status = models.CharField(max_length=16, choices=AlertState.choices)
    sequence = models.PositiveIntegerField()
    value = models.DecimalField(max_digits=40, decimal_places=12)  # what crossed, at the time
    alert_settings = models.JSONField(default=dict)  # the rule as it was
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["entity_type", "entity_id", "parent_entity_id", "sequence"],
                name="one_alert_log_per_change",
            )
        ]
        indexes = [models.Index(fields=["customer", "created_at"], name="alertlog_customer_idx")]

    def __str__(self):
        return f"{self.entity_type} {self.entity_id}: {self.previous_status} → {self.alert_status}"


BUDGET_PERCENTS = (50, 80, 100)


class Budget(models.Model):
    """A customer's own monthly spend limit, for the account or one feature. Spend is the
    open billing periods' proposed subtotal (see ``billing.budgets``); the state below is
    kept by the recompute path, so ``budget_capped`` reads it cheaply."""

    class SetBy(models.TextChoices):
        CUSTOMER = "customer"
        OPERATOR = "operator"

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("budget"), editable=False
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="budgets")
    feature = models.ForeignKey(
        Feature,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: the whole account.",
    )
    amount = models.DecimalField(**AMOUNT, validators=[MinValueValidator(Decimal("0.01"))])
    currency = models.CharField(max_length=3, default="usd")
    alert_percents = models.JSONField(
        default=list, blank=True, help_text="Email at these percents of the budget: 50, 80, 100."
    )
    hard_cap = models.BooleanField(
        default=False, help_text="At 100 %, the entitlement check answers not allowed."
    )
    set_by = models.CharField(max_length=16, choices=SetBy.choices, default=SetBy.CUSTOMER)
    set_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    locked = models.BooleanField(
        default=False, help_text="Operator override: the customer cannot change or clear it."
    )
    # Kept by the recompute path.
    period_key = models.CharField(max_length=255, blank=True, editable=False)
    spent = models.DecimalField(**AMOUNT, default=Decimal(0), editable=False)
    reached_percents = models.JSONField(default=list, blank=True, editable=False)
    capped = models.BooleanField(default=False, editable=False)
    evaluated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["customer", "feature"]
        constraints = [
            *one_per_feature(
                "customer",
                whole=("one_account_budget_per_customer", "an account budget"),
                each=("one_budget_per_customer_feature", "a budget for this feature"),
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="budget_positive"),
        ]

    def __str__(self):
        scope = self.feature or "account"
        return f"{self.customer} {scope} budget"

    def clean(self):
        percents = self.alert_percents or []
        if not isinstance(percents, list) or any(p not in BUDGET_PERCENTS for p in percents):
            raise ValidationError({"alert_percents": "Choose among 50, 80 and 100."})
        self.alert_percents = sorted(set(percents))

    @property
    def percent_used(self) -> Decimal:
        """Whole percent, rounded down: 99.9 % is not shown as the 100 % that caps."""
        if not self.amount:
            return Decimal(0)
        return (self.spent * 100 / self.amount).quantize(Decimal(1), rounding=ROUND_DOWN)


class OutboxEmail(models.Model):
    """An email, written in the transaction of what it reports and sent after commit by a
    worker (``billing.emails``). ``key`` makes each notice once."""

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("mail"), editable=False
    )
    key = models.CharField(max_length=255, unique=True)
    to = models.EmailField()
    subject = models.CharField(max_length=255)
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "outgoing email"
        indexes = [models.Index(fields=["sent_at", "created_at"], name="outboxemail_unsent_idx")]

    def __str__(self):
        return f"{self.subject} → {self.to}"
