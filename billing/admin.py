"""The billing admin: a thin adapter over billing.services; it decides nothing itself."""

import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from solo.admin import SingletonModelAdmin

from billing import (
    ledger,
    webhook_admin,  # noqa: F401  (registers the webhook pages)
)
from billing.credits import grant_give_now
from billing.models import (
    CreditConsumption,
    CreditGrant,
    Invoice,
    InvoiceLineItem,
    Issuer,
    Subscription,
    Wallet,
    WalletTransaction,
)
from billing.overview import (
    customer_billing,
    customers_with_spend,
    late_invoices_of,
    subscriptions_with_spend,
    waiting_drafts,
)
from billing.portal import documents
from billing.portal.selectors import invoice_label, line_price_summary
from billing.selectors import late_events, late_usage, running_period
from billing.services import (
    draft_recompute,
    invoice_finalize,
    invoice_void,
    subscription_cancel,
    subscription_create,
    subscription_period_close_early,
)
from billing.wallet_selectors import block_remaining, ledger_entries
from billing.wallets import (
    EXPIRY_IN_THE_PAST,
    TOP_UP_REASONS,
    Balance,
    invoice_payment_update,
    wallet_balance,
    wallet_create,
    wallet_debit,
    wallet_terminate,
    wallet_top_up,
    wallet_update,
)
from catalog import admin as catalog_admin
from catalog.models import BillingPeriod, Plan
from catalog.money import format_money, format_quantity
from config.admin import DecimalInput, ReadOnly, TallyAdmin, TallyTabularInline, plain_decimal
from config.bounds import moment_check
from metering import admin as metering_admin
from metering.models import Customer, Event

LATE_USAGE_LIMIT = 500  # events shown
LATE_INVOICES_LIMIT = 100
LATE_USAGE_WINDOWS = {"30": 30, "90": 90, "365": 365, "all": None}  # days


def _reason(error: ValidationError) -> str:
    return " ".join(error.messages)


def _period(start, end) -> str:
    start, end = timezone.localtime(start), timezone.localtime(end)
    return f"{start:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M}"


def _age(moment) -> str:
    """``12 seconds ago``, ``3 minutes ago``, ``2 days, 4 hours ago``; ``—`` when never."""
    if moment is None:
        return "—"
    seconds = int((timezone.now() - moment).total_seconds())
    if 0 <= seconds < 60:
        age = f"{seconds} second{'' if seconds == 1 else 's'}"
    else:
        age = timesince(moment)
    return format_html('<span title="{}">{} ago</span>', moment.isoformat(), age)


def _spend(amount: Decimal | None, currency: str | None) -> str:
    return "—" if amount is None else format_money(amount, currency)


def _quantity(value: Decimal) -> str:
    return f"{value.normalize():,f}"


def _confirm(modeladmin, request, queryset, *, action: str, title: str, warning: str, label=str):
    """An intermediate "are you sure?" page, as Django's delete action has; None once confirmed."""
    if request.POST.get("post") == "yes":
        return None
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "warning": warning,
        "objects": list(queryset),
        "labels": [label(obj) for obj in queryset],
        "action": action,
        "opts": modeladmin.model._meta,
        "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/billing/action_confirmation.html", context)


def _errors_to_form(form, error: ValidationError, aliases: dict | None = None) -> None:
    """A service's refusal on the form: a field's errors on that field, the rest on top."""
    if not hasattr(error, "error_dict"):
        form.add_error(None, error)
        return
    for field, errors in error.error_dict.items():
        field = (aliases or {}).get(field, field)
        if field in (None, NON_FIELD_ERRORS):
            form.add_error(None, errors)
        elif field in form.fields:
            form.add_error(field, errors)
        else:
            form.add_error(None, [f"{field}: {m}" for e in errors for m in e.messages])


# Subscriptions


class SubscriptionAddForm(forms.ModelForm):
    """Creates through ``subscription_create``: the service validates and saves, once.

    Django's ModelForm validates by building an instance and running ``full_clean``;
    here that step calls the service instead, so its ValidationError lands on the form
    and the admin's "added" response only follows a real creation. The admin runs the
    whole request in one transaction.
    """

    class Meta:
        model = Subscription
        fields = [
            "customer",
            "plan",
            "currency",
            "billing_period",
            "billing_cycle",
            "start_date",
            "end_date",
            "auto_invoice_threshold",
        ]
        help_texts = {
            "currency": "Blank: the currency of the plan's first price.",
            "billing_period": "Blank: the billing period of the plan's first price.",
            "start_date": "Blank: now.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in ("currency", "billing_period", "start_date"):
            self.fields[name].required = False
            if name not in (kwargs.get("initial") or {}):
                self.initial[name] = None  # not the model's default: blank means "the plan's"
        self.fields["billing_period"].choices = [("", "Plan's billing period")] + list(
            BillingPeriod.choices
        )

    def _post_clean(self):
        if self.errors:
            return
        data = self.cleaned_data
        try:
            self.instance = subscription_create(
                customer=data["customer"],
                plan=data["plan"],
                currency=data.get("currency") or None,
                billing_period=data.get("billing_period") or None,
                billing_cycle=data["billing_cycle"],
                start_date=data.get("start_date"),
                end_date=data.get("end_date"),
                auto_invoice_threshold=data.get("auto_invoice_threshold"),
            )
        except ValidationError as error:
            _errors_to_form(self, error)


# What a subscription's page changes; the rest moves only through the services.
EDITABLE_LATER = ("metadata", "auto_invoice_threshold")


@admin.register(Subscription)
class SubscriptionAdmin(TallyAdmin):
    add_form = SubscriptionAddForm
    list_display = [
        "customer",
        "plan",
        "status",
        "current_period",
        "spend",
        "cancel_at_period_end",
    ]
    list_filter = ["status", "cancel_at_period_end", "billing_period", "billing_cycle", "plan"]
    search_fields = ["customer__external_id", "customer__name"]
    list_select_related = ["customer", "plan"]
    autocomplete_fields = ["customer", "plan"]
    actions = ["cancel_at_end_of_period"]
    add_fieldsets = [(None, {"fields": SubscriptionAddForm.Meta.fields})]
    fieldsets = [
        (None, {"fields": ["id", "customer", "plan", "status", "invoices"]}),
        (
            "Billing",
            {
                "fields": [
                    ("currency", "billing_period", "billing_period_count", "billing_cycle"),
                    "billing_anchor",
                    ("start_date", "end_date"),
                    ("current_period_start", "current_period_end"),
                    ("cancel_at_period_end", "cancelled_at"),
                    "auto_invoice_threshold",
                ]
            },
        ),
        ("Metadata", {"fields": ["metadata", ("created_at", "updated_at")]}),
    ]

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        return [
            "id",
            "invoices",
            *(f.name for f in Subscription._meta.fields if f.name not in EDITABLE_LATER),
        ]

    def save_model(self, request, obj, form, change):
        if change:
            # Write only what is editable, never a stale period or status.
            obj.save(update_fields=[*EDITABLE_LATER, "updated_at"])
        # An added subscription was already created by subscription_create in the form.

    def has_delete_permission(self, request, obj=None):
        return False  # a subscription is cancelled, and its invoices keep it

    @admin.display(description="Current period")
    def current_period(self, obj):
        return _period(obj.current_period_start, obj.current_period_end)

    def get_queryset(self, request):
        return subscriptions_with_spend(super().get_queryset(request))

    @admin.display(description="Spend this period", ordering="period_spend")
    def spend(self, obj):
        return _spend(obj.period_spend, obj.currency)

    @admin.display(description="Invoices")
    def invoices(self, obj):
        url = reverse("admin:billing_invoice_changelist") + f"?subscription__id__exact={obj.pk}"
        return format_html('<a href="{}">{} invoice(s)</a>', url, obj.invoices.count())

    @admin.action(description="Cancel at the end of the current period", permissions=["change"])
    def cancel_at_end_of_period(self, request, queryset):
        queryset = queryset.select_related("customer", "plan")
        confirm = _confirm(
            self,
            request,
            queryset,
            action="cancel_at_end_of_period",
            title="Cancel subscriptions at the end of their period?",
            warning="Each keeps billing until its current period ends, then stops.",
        )
        if confirm is not None:
            return confirm
        cancelled = []
        for subscription in queryset:
            try:
                subscription_cancel(subscription=subscription, cancellation_type="end_of_period")
            except ValidationError as error:
                messages.error(request, f"Subscription {subscription}: {_reason(error)}")
            else:
                cancelled.append(subscription)
        if cancelled:
            messages.success(
                request, f"{len(cancelled)} subscription(s) will cancel at the end of the period."
            )


# Invoices


class InvoiceLineItemInline(ReadOnly, TallyTabularInline):
    model = InvoiceLineItem
    fields = [
        "display_name",
        "price_type",
        "priced_as",
        "quantity_display",
        "packages_display",
        "event_count",
        "amount_display",
        "period",
        "counted",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name = "line"
    verbose_name_plural = "lines"

    @admin.display(description="Quantity")
    def quantity_display(self, obj):
        return _quantity(obj.quantity)

    @admin.display(description="Amount")
    def amount_display(self, obj):
        return format_money(obj.amount, obj.currency)

    @admin.display(description="Priced as")
    def priced_as(self, obj):
        return line_price_summary(obj)

    @admin.display(description="Packages")
    def packages_display(self, obj):
        return "—" if obj.packages is None else _quantity(obj.packages)

    @admin.display(description="Counts")
    def counted(self, obj):
        """The meter as it was when the line was priced."""
        meter = obj.meter_definition
        if meter is None:
            return "—"
        what = meter["aggregation"] + (f"({meter['field']})" if meter["field"] else "")
        where = "; ".join(f"{f['key']} in {', '.join(f['values'])}" for f in meter["filters"])
        return f"{meter['event_name']} · {what}" + (f" where {where}" if where else "")

    @admin.display(description="Period")
    def period(self, obj):
        return _period(obj.period_start, obj.period_end)


class RecomputeFilter(admin.SimpleListFilter):
    title = "recompute"
    parameter_name = "recompute"

    def lookups(self, request, model_admin):
        return [("waiting", "Waiting over a minute")]

    def queryset(self, request, queryset):
        if self.value() == "waiting":
            return queryset.filter(pk__in=waiting_drafts(now=timezone.now()).values("pk"))
        return queryset


@admin.register(Invoice)
class InvoiceAdmin(TallyAdmin):
    """Read-only: invoices change only through the actions, which call the services."""

    list_display = [
        "number",
        "customer",
        "invoice_type",
        "invoice_status",
        "payment_status",
        "period",
        "total_display",
        "last_computed",
    ]
    list_filter = ["invoice_status", "payment_status", "invoice_type", RecomputeFilter]
    search_fields = ["^invoice_number", "=customer__external_id"]
    list_select_related = ["customer"]
    change_list_template = "admin/billing/invoice/change_list.html"
    change_form_template = "admin/billing/invoice/change_form.html"
    actions = ["recompute", "finalize", "void", "mark_paid"]
    inlines = [InvoiceLineItemInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "number",
                    "customer",
                    "subscription",
                    ("invoice_type", "billing_reason"),
                ]
            },
        ),
        (
            "Status",
            {
                "fields": [
                    ("invoice_status", "payment_status"),
                    ("finalized_at", "due_date", "voided_at", "paid_at"),
                ]
            },
        ),
        (
            "Amounts",
            {
                "fields": [
                    "currency",
                    "subtotal_display",
                    "credits_applied_display",
                    "total_display",
                    "amount_paid_display",
                    "amount_remaining_display",
                    "last_computed",
                ]
            },
        ),
        ("Period", {"fields": [("period_start", "period_end")]}),
        ("Record", {"fields": [("created_at", "updated_at")]}),
    ]
    readonly_fields = [
        "id",
        "number",
        "customer",
        "subscription",
        "invoice_type",
        "billing_reason",
        "invoice_status",
        "payment_status",
        "finalized_at",
        "due_date",
        "voided_at",
        "paid_at",
        "currency",
        "subtotal_display",
        "credits_applied_display",
        "total_display",
        "amount_paid_display",
        "amount_remaining_display",
        "last_computed",
        "period_start",
        "period_end",
        "created_at",
        "updated_at",
    ]

    def get_urls(self):
        report = path(
            "late-usage/",
            self.admin_site.admin_view(self.late_usage_view),
            name="billing_invoice_late_usage",
        )
        pdf = path(
            "<path:object_id>/pdf/",
            self.admin_site.admin_view(self.pdf_view),
            name="billing_invoice_pdf",
        )
        return [report, pdf, *super().get_urls()]

    def pdf_view(self, request, object_id):
        """The invoice document as the customer downloads it."""
        invoice = self.get_object(request, object_id)
        if invoice is None:
            raise Http404
        if not self.has_view_permission(request, invoice):
            raise PermissionDenied
        return documents.pdf_response(invoice)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # the page is a view; the actions below are the only writes

    def has_delete_permission(self, request, obj=None):
        return False  # voiding keeps the record

    def has_operate_permission(self, request):
        """Running the invoice actions takes the model's change permission."""
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    @admin.display(description="Number", ordering="invoice_number")
    def number(self, obj):
        return obj.invoice_number or f"({obj.get_invoice_status_display().lower()})"

    @admin.display(description="Period", ordering="period_start")
    def period(self, obj):
        return _period(obj.period_start, obj.period_end)

    @admin.display(description="Total", ordering="total")
    def total_display(self, obj):
        return format_money(obj.total, obj.currency)

    @admin.display(description="Subtotal", ordering="subtotal")
    def subtotal_display(self, obj):
        return format_money(obj.subtotal, obj.currency)

    @admin.display(description="Prepaid credits applied")
    def credits_applied_display(self, obj):
        return format_money(-obj.total_prepaid_credits_applied, obj.currency)

    @admin.display(description="Amount paid")
    def amount_paid_display(self, obj):
        return format_money(obj.amount_paid, obj.currency)

    @admin.display(description="Amount remaining")
    def amount_remaining_display(self, obj):
        return format_money(obj.amount_remaining, obj.currency)

    @admin.display(description="Last computed", ordering="last_computed_at")
    def last_computed(self, obj):
        return _age(obj.last_computed_at)

    @staticmethod
    def _label(invoice: Invoice) -> str:
        return f"Invoice {invoice.invoice_number or invoice.pk} ({invoice.customer.external_id})"

    @admin.action(description="Recompute proposed invoice", permissions=["operate"])
    def recompute(self, request, queryset):
        queryset = queryset.select_related("customer", "subscription")
        self._run(request, queryset, draft_recompute, "Recomputed")

    @admin.action(description="Finalize", permissions=["operate"])
    def finalize(self, request, queryset):
        queryset = queryset.select_related("customer", "subscription")
        now = timezone.now()
        running = [r for i in queryset if (r := running_period(invoice=i, now=now))]
        if request.POST.get("post") == "close_early":
            self._close_early(request, queryset, {r.invoice.pk for r in running}, now)
            return None
        if running and request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Finalize these invoices?",
                "running": running,
                "others": [i for i in queryset if i.pk not in {r.invoice.pk for r in running}],
                "now": now,
                "opts": self.opts,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/billing/finalize_running.html", context)
        confirm = _confirm(
            self,
            request,
            queryset,
            action="finalize",
            title="Finalize these invoices?",
            warning="Each draft is recomputed, numbered and frozen; a $0 one is skipped. "
            "This cannot be undone.",
            label=self._label,
        )
        if confirm is not None:
            return confirm
        self._run(request, queryset, invoice_finalize, "Finalized")

    def _close_early(self, request, queryset, running: set, now):
        """Drafts of running periods close early; the others finalize as usual."""

        def close_or_finalize(*, invoice):
            if invoice.pk not in running:
                return invoice_finalize(invoice=invoice)
            return subscription_period_close_early(subscription=invoice.subscription, now=now)

        self._run(request, queryset, close_or_finalize, "Finalized")

    @admin.action(description="Void", permissions=["operate"])
    def void(self, request, queryset):
        queryset = queryset.select_related("customer")
        confirm = _confirm(
            self,
            request,
            queryset,
            action="void",
            title="Void these invoices?",
            warning="A voided invoice keeps its record and number but is never collected. "
            "This cannot be undone.",
            label=self._label,
        )
        if confirm is not None:
            return confirm
        self._run(request, queryset, invoice_void, "Voided")

    @admin.action(description="Mark paid", permissions=["operate"])
    def mark_paid(self, request, queryset):
        queryset = queryset.select_related("customer")
        confirm = _confirm(
            self,
            request,
            queryset,
            action="mark_paid",
            title="Mark these invoices paid?",
            warning="Records that each was paid in full outside Tally. Prepaid credits bought "
            "on them become usable.",
            label=self._label,
        )
        if confirm is not None:
            return confirm

        def pay(*, invoice):
            return invoice_payment_update(
                invoice=invoice, payment_status=Invoice.PaymentStatus.SUCCEEDED
            )

        self._run(request, queryset, pay, "Marked paid")

    def _run(self, request, queryset, service, verb: str):
        """Call ``service`` on each invoice; a refusal is reported and the rest go on."""
        done = []
        for invoice in queryset:
            try:
                result = service(invoice=invoice)
            except ValidationError as error:
                messages.error(request, f"{self._label(invoice)}: {_reason(error)}")
            else:
                done.append(f"{result.invoice_number or result.pk} ({result.invoice_status})")
        if done:
            messages.success(request, f"{verb} {len(done)} invoice(s): {', '.join(done)}.")

    def late_usage_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = request.GET.get("window", "90")
        if window not in LATE_USAGE_WINDOWS:
            window = "90"
        days = LATE_USAGE_WINDOWS[window]
        since = timezone.now() - timedelta(days=days) if days is not None else None
        groups, shown = [], 0
        for late in late_usage(limit=LATE_INVOICES_LIMIT, finalized_after=since):
            events = late_events(late=late, limit=max(LATE_USAGE_LIMIT - shown, 0))
            shown += len(events)
            groups.append({"late": late, "events": events})
        context = {
            **self.admin_site.each_context(request),
            "title": "Late usage",
            "opts": self.opts,
            "groups": groups,
            "window": window,
            "windows": [
                (key, f"{d} days" if d else "all time") for key, d in LATE_USAGE_WINDOWS.items()
            ],
            "limit": LATE_USAGE_LIMIT,
            "shown": shown,
            "truncated": shown < sum(g["late"].event_count for g in groups),
        }
        return TemplateResponse(request, "admin/billing/late_usage.html", context)


@admin.register(Issuer)
class IssuerAdmin(SingletonModelAdmin, TallyAdmin):
    """The company named on every invoice; a blank field falls back to its setting."""


# Wallets and their ledger


def _credits(value: Decimal) -> str:
    return f"{format_quantity(value)} credit{'' if value == 1 else 's'}"


def _worth(credits: Decimal, wallet: Wallet) -> str:
    """``$100.00 (100 credits)``."""
    money = format_money(ledger.to_currency(credits, wallet), wallet.currency)
    return f"{money} ({_credits(credits)})"


def _live(wallet: Wallet) -> Balance:
    """The wallet's balance, computed once per page."""
    if not hasattr(wallet, "_balance"):
        wallet._balance = wallet_balance(wallet)
    return wallet._balance


class BalanceDisplay:
    """The ledger's balance and the real-time one (less the open periods' usage)."""

    @admin.display(description="Balance")
    def ledger_balance(self, obj):
        if obj.pk is None:
            return "—"
        return _worth(_live(obj).credit_balance, obj)

    @admin.display(description="Real-time balance")
    def live_balance(self, obj):
        if obj.pk is None:
            return "—"
        live = _live(obj)
        return _worth(live.real_time_credit_balance, obj)

    @admin.display(description="This period's usage")
    def period_usage(self, obj):
        if obj.pk is None:
            return "—"
        return format_money(_live(obj).current_period_usage, obj.currency)


class WalletInline(ReadOnly, BalanceDisplay, TallyTabularInline):
    """Read-only: wallets are added and changed on their own page."""

    model = Wallet
    fields = ["currency", "wallet_type", "wallet_status", "ledger_balance", "live_balance"]
    readonly_fields = fields
    extra = 0
    show_change_link = True


class WalletAddForm(forms.ModelForm):
    """Creates through ``wallet_create`` (see SubscriptionAddForm for why in ``_post_clean``)."""

    class Meta:
        model = Wallet
        fields = ["customer", "currency", "wallet_type", "name", "description", "conversion_rate"]

    def clean_currency(self):
        return self.cleaned_data["currency"].lower()

    def _post_clean(self):
        if self.errors:
            return
        try:
            self.instance = wallet_create(**self.cleaned_data)
        except ValidationError as error:
            _errors_to_form(self, error)


class WalletChangeForm(forms.ModelForm):
    """Changes through ``wallet_update``. A wallet is closed by terminating it, not here."""

    wallet_status = forms.ChoiceField(
        choices=[(s, s.label) for s in (Wallet.Status.ACTIVE, Wallet.Status.FROZEN)]
    )

    class Meta:
        model = Wallet
        fields = [
            "name",
            "description",
            "wallet_status",
            "auto_topup_enabled",
            "auto_topup_threshold",
            "auto_topup_amount",
            "auto_topup_invoicing",
            "auto_topup_cooldown",
            "alert_settings",
            "metadata",
        ]

    def _post_clean(self):
        if self.errors:
            return
        try:
            self.instance = wallet_update(wallet=self.instance, **self.cleaned_data)
        except ValidationError as error:
            _errors_to_form(self, error)


class LedgerForm(forms.Form):
    """One ledger write. The key, made when the form is shown, makes a second submit of the
    same form a replay of the first, not a second write."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=64)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["idempotency_key"] = uuid.uuid4().hex


class TopUpForm(LedgerForm):
    credits = forms.DecimalField(max_digits=28, decimal_places=12, widget=DecimalInput)
    reason = forms.ChoiceField(
        choices=[(r, WalletTransaction.Reason(r).label) for r in TOP_UP_REASONS],
        help_text="Invoiced purchases add pending credits on a purchase invoice; they become "
        "usable once it is marked paid.",
    )
    priority = forms.IntegerField(
        required=False, min_value=0, max_value=2**31 - 1, help_text="Lower is consumed first."
    )
    expiry_date = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text="UTC. Blank: never expires.",
    )
    description = forms.CharField(required=False, max_length=1000, widget=forms.Textarea)

    def clean_expiry_date(self):
        expiry = self.cleaned_data["expiry_date"]
        if expiry is None:
            return None
        try:
            moment_check(expiry)
        except ValueError as error:
            raise ValidationError(f"The expiry {error}.") from None
        if expiry <= timezone.now():
            raise ValidationError(EXPIRY_IN_THE_PAST)
        return expiry


class DebitForm(LedgerForm):
    credits = forms.DecimalField(max_digits=28, decimal_places=12, widget=DecimalInput)
    description = forms.CharField(
        label="Reason", max_length=1000, widget=forms.Textarea, help_text="Why the credits go."
    )


# A service names the amount ``credits_to_add`` as the API does; the form calls it credits.
LEDGER_FIELDS = {"credits_to_add": "credits", "transaction_reason": "reason"}


@admin.register(Wallet)
class WalletAdmin(BalanceDisplay, TallyAdmin):
    add_form = WalletAddForm
    form = WalletChangeForm
    list_display = [
        "__str__",
        "customer",
        "currency",
        "wallet_type",
        "wallet_status",
        "balance",
    ]
    list_filter = ["wallet_type", "wallet_status", "currency"]
    search_fields = ["=id", "=customer__external_id", "customer__name", "name"]
    list_select_related = ["customer"]
    autocomplete_fields = ["customer"]
    actions = ["terminate"]
    change_form_template = "admin/billing/wallet/change_form.html"
    add_fieldsets = [(None, {"fields": WalletAddForm.Meta.fields})]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "customer",
                    ("currency", "wallet_type", "rate"),
                    "wallet_status",
                    "name",
                    "description",
                ]
            },
        ),
        ("Balance", {"fields": ["ledger_balance", "period_usage", "live_balance"]}),
        (
            "Auto top-up",
            {
                "fields": [
                    "auto_topup_enabled",
                    ("auto_topup_threshold", "auto_topup_amount"),
                    ("auto_topup_invoicing", "auto_topup_cooldown"),
                    "last_auto_topup_at",
                ]
            },
        ),
        ("Alerts", {"fields": ["alert_settings", "alert_state"]}),
        ("Metadata", {"fields": ["metadata", ("created_at", "updated_at")]}),
    ]
    LEDGER_SHOWN = 50

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = self.add_form if obj is None else self.form
        return super().get_form(request, obj, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return []
        shown = ["id", "customer", "currency", "wallet_type", "rate"]
        shown += ["ledger_balance", "period_usage", "live_balance"]
        shown += ["last_auto_topup_at", "alert_state", "created_at", "updated_at"]
        if obj.wallet_status == Wallet.Status.CLOSED:
            shown += WalletChangeForm.Meta.fields
        return shown

    def save_model(self, request, obj, form, change):
        pass  # the form's service call saved it

    @admin.display(description="Balance")
    def balance(self, obj):
        """The ledger's only: the real-time one prices each open period, too slow for a list."""
        by_reason = getattr(obj, "ledger_by_reason", None)
        if by_reason is None:
            by_reason = ledger.balance_by_reason(obj)
        return _worth(sum(by_reason.values(), Decimal(0)), obj)

    def get_changelist_instance(self, request):
        """The page's ledgers, read at once rather than row by row."""
        changelist = super().get_changelist_instance(request)
        rows = list(changelist.result_list)
        found = ledger.balances_by_reason([wallet.pk for wallet in rows])
        for wallet in rows:
            wallet.ledger_by_reason = found[wallet.pk]
        return changelist

    @admin.display(description="Conversion rate")
    def rate(self, obj):
        return f"{plain_decimal(obj.conversion_rate)} {obj.currency.upper()} per credit"

    def has_delete_permission(self, request, obj=None):
        return False  # its ledger keeps it; terminate closes it

    def get_urls(self):
        site = self.admin_site
        return [
            path(
                "<path:object_id>/top-up/",
                site.admin_view(self.top_up_view),
                name="billing_wallet_top_up",
            ),
            path(
                "<path:object_id>/debit/",
                site.admin_view(self.debit_view),
                name="billing_wallet_debit",
            ),
            *super().get_urls(),
        ]

    def _wallet_for_change(self, request, object_id) -> Wallet:
        wallet = self.get_object(request, object_id)
        if wallet is None:
            raise Http404
        if not self.has_change_permission(request, wallet):
            raise PermissionDenied
        return wallet

    def top_up_view(self, request, object_id):
        wallet = self._wallet_for_change(request, object_id)

        def top_up(data):
            block = wallet_top_up(
                wallet=wallet,
                reason=data["reason"],
                credits=data["credits"],
                priority=data["priority"],
                expiry_date=data["expiry_date"],
                idempotency_key=f"admin:{data['idempotency_key']}",
                description=data["description"],
            )
            done = f"Added {_worth(block.credit_amount, wallet)} to {wallet}."
            if block.transaction_status == WalletTransaction.Status.PENDING:
                number = block.invoice.invoice_number
                done += f" They are pending until invoice {number} is marked paid."
            return done

        return self._ledger_write(request, wallet, TopUpForm, top_up, "Top up")

    def debit_view(self, request, object_id):
        wallet = self._wallet_for_change(request, object_id)

        def take(data):
            entry = wallet_debit(
                wallet=wallet,
                credits=data["credits"],
                description=data["description"],
                idempotency_key=f"admin:{data['idempotency_key']}",
            )
            return f"Debited {_worth(entry.credit_amount, wallet)} from {wallet}."

        return self._ledger_write(request, wallet, DebitForm, take, "Debit")

    def _ledger_write(self, request, wallet, form_class, write, verb: str):
        """The form, and on a valid POST the service; its refusal shows on the form."""
        form = form_class(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                done = write(form.cleaned_data)
            except ValidationError as error:
                _errors_to_form(form, error, LEDGER_FIELDS)
            else:
                messages.success(request, done)
                return redirect("admin:billing_wallet_change", wallet.pk)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"{verb}: {wallet}",
            "form": form,
            "wallet": wallet,
            "balance": _worth(ledger.balance(wallet), wallet),
            "verb": verb,
        }
        status = 400 if form.errors else 200
        template = "admin/billing/wallet/ledger_form.html"
        return TemplateResponse(request, template, context, status=status)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["ledger"] = self._ledger_context(request, obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _ledger_context(self, request, wallet: Wallet) -> dict:
        """The latest entries, filtered by type, status and reason as the GET asks."""
        choices = {
            "type": WalletTransaction.Type.choices,
            "status": WalletTransaction.Status.choices,
            "reason": WalletTransaction.Reason.choices,
        }
        chosen = {k: v for k in choices if (v := request.GET.get(k)) in dict(choices[k])}
        entries = list(ledger_entries(wallets=[wallet], **chosen)[: self.LEDGER_SHOWN + 1])
        return {
            "filters": [(k, c, chosen.get(k, "")) for k, c in choices.items()],
            "rows": [(entry, block_remaining(entry)) for entry in entries[: self.LEDGER_SHOWN]],
            "more": len(entries) > self.LEDGER_SHOWN,
            "shown": self.LEDGER_SHOWN,
            "all_url": reverse("admin:billing_wallettransaction_changelist")
            + f"?wallet__id__exact={wallet.pk}",
        }

    @admin.action(description="Terminate: debit what is left and close", permissions=["change"])
    def terminate(self, request, queryset):
        queryset = queryset.select_related("customer")
        confirm = _confirm(
            self,
            request,
            queryset,
            action="terminate",
            title="Terminate these wallets?",
            warning="What is left of each is debited and the wallet is closed; unpaid purchases "
            "into it never credit. This cannot be undone.",
        )
        if confirm is not None:
            return confirm
        closed = []
        for wallet in queryset:
            try:
                wallet_terminate(wallet=wallet)
            except ValidationError as error:
                messages.error(request, f"{wallet}: {_reason(error)}")
            else:
                closed.append(str(wallet))
        if closed:
            messages.success(request, f"Terminated {len(closed)} wallet(s): {', '.join(closed)}.")


class ConsumptionInline(ReadOnly, TallyTabularInline):
    model = CreditConsumption
    extra = 0
    can_delete = False


class DrawnFromInline(ConsumptionInline):
    """Of a debit: the blocks it took credits from."""

    fk_name = "debit"
    fields = readonly_fields = ["credit", "credits_taken"]
    verbose_name_plural = "drawn from"

    @admin.display(description="Credits")
    def credits_taken(self, obj):
        return format_quantity(obj.credits)


class DrawnByInline(ConsumptionInline):
    """Of a credit block: the debits that took from it."""

    fk_name = "credit"
    fields = readonly_fields = ["debit", "credits_taken"]
    verbose_name_plural = "drawn by"

    @admin.display(description="Credits")
    def credits_taken(self, obj):
        return format_quantity(obj.credits)


@admin.register(WalletTransaction)
class WalletTransactionAdmin(ReadOnly, TallyAdmin):
    """The ledger, read-only: it changes only through the wallet's actions and the services."""

    list_display = [
        "created_at",
        "wallet",
        "type",
        "transaction_status",
        "transaction_reason",
        "credits_display",
        "amount_display",
        "remaining_display",
        "expiry_date",
        "invoice",
    ]
    list_filter = [
        ("wallet", admin.RelatedOnlyFieldListFilter),
        "type",
        "transaction_status",
        "transaction_reason",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["=id", "=wallet__id", "=wallet__customer__external_id", "=idempotency_key"]
    list_select_related = ["wallet__customer", "invoice"]
    fields = [
        "id",
        "wallet",
        ("type", "transaction_status", "transaction_reason"),
        ("credits_display", "amount_display", "remaining_display"),
        ("priority", "expiry_date"),
        "invoice",
        "idempotency_key",
        "description",
        "metadata",
        ("created_at", "updated_at"),
    ]
    inlines = [DrawnFromInline, DrawnByInline]

    readonly_fields = [f for row in fields for f in (row if isinstance(row, tuple) else [row])]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(consumed=ledger.consumed())

    def get_inline_instances(self, request, obj=None):
        inlines = super().get_inline_instances(request, obj)
        if obj is None:
            return inlines
        keep = DrawnByInline if obj.type == WalletTransaction.Type.CREDIT else DrawnFromInline
        return [inline for inline in inlines if isinstance(inline, keep)]

    @admin.display(description="Credits", ordering="credit_amount")
    def credits_display(self, obj):
        sign = "-" if obj.type == WalletTransaction.Type.DEBIT else "+"
        return f"{sign}{format_quantity(obj.credit_amount)}"

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return format_money(obj.amount, obj.wallet.currency)

    @admin.display(description="Remaining")
    def remaining_display(self, obj):
        remaining = block_remaining(obj)
        if remaining is None:
            return "pending payment" if obj.transaction_status == "pending" else "—"
        if remaining and obj.expiry_date and obj.expiry_date <= timezone.now():
            return f"{format_quantity(remaining)} (expired)"
        return format_quantity(remaining)


# Credit grants on the plan form (catalog's admin cannot know billing's models)

GRANT_MONEY_TERMS = [
    "credits",
    "cadence",
    "expiration_type",
    "expiration_duration",
    "expiration_duration_unit",
    "priority",
]
GRANT_FROZEN = (
    "This grant has been given to subscribers: its credits, cadence, expiry and priority are "
    "frozen. Archive it and add a new one to change them."
)


class CreditGrantForm(forms.ModelForm):
    class Meta:
        model = CreditGrant
        fields = ["name", *GRANT_MONEY_TERMS, "status"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.applied = self.instance.pk is not None and self.instance.applications.exists()
        for name in GRANT_MONEY_TERMS:
            self.fields[name].disabled = self.applied  # posted values are ignored

    def clean_credits(self):
        credits = self.cleaned_data["credits"]
        if credits is not None and credits <= 0:
            raise ValidationError("A grant gives more than 0 credits.")
        return credits

    def clean(self):
        data = super().clean()
        if not self.applied and data.get("expiration_type") != CreditGrant.Expiry.DURATION:
            data["expiration_duration"], data["expiration_duration_unit"] = None, ""
        return data


class CreditGrantFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        for form in self.deleted_forms:
            if getattr(form, "applied", False):
                raise ValidationError(f"{form.instance}: {GRANT_FROZEN}")


class CreditGrantInline(TallyTabularInline):
    model = CreditGrant
    form = CreditGrantForm
    formset = CreditGrantFormSet
    fk_name = "plan"
    fields = [*CreditGrantForm.Meta.fields, "given"]
    readonly_fields = ["given"]
    extra = 0
    verbose_name_plural = "credit grants (given to every subscriber)"

    @admin.display(description="Given")
    def given(self, obj):
        count = obj.applications.count() if obj.pk else 0
        return f"{count} time{'' if count == 1 else 's'}. {GRANT_FROZEN}" if count else "—"


admin.site.unregister(Plan)


@admin.register(Plan)
class PlanAdmin(catalog_admin.PlanAdmin):
    inlines = [*catalog_admin.PlanAdmin.inlines, CreditGrantInline]

    def save_formset(self, request, form, formset, change):
        if formset.model is not CreditGrant:
            return super().save_formset(request, form, formset, change)
        with transaction.atomic():
            new = [f.instance for f in formset.extra_forms if f.has_changed()]
            super().save_formset(request, form, formset, change)
            for grant in new:
                if grant.pk is not None:
                    grant_give_now(grant)


# Customers and events, with what billing knows of them (metering's admin cannot know it)


admin.site.unregister(Customer)


@admin.register(Customer)
class CustomerAdmin(metering_admin.CustomerAdmin):
    list_display = [*metering_admin.CustomerAdmin.list_display, "spend"]
    inlines = [*metering_admin.CustomerAdmin.inlines, WalletInline]

    def get_queryset(self, request):
        return customers_with_spend(super().get_queryset(request))

    @admin.display(description="Spend this period", ordering="period_spend")
    def spend(self, obj):
        shown = _spend(obj.period_spend, obj.period_currency)
        more = (obj.period_currencies or 0) - 1
        return f"{shown} + {more} other currenc{'y' if more == 1 else 'ies'}" if more > 0 else shown

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and request.user.has_perm("billing.view_invoice"):
            context["billing"] = customer_billing(customer=obj)
        return super().render_change_form(request, context, add, change, form_url, obj)


admin.site.unregister(Event)


@admin.register(Event)
class EventAdmin(metering_admin.EventAdmin):
    def explain(self, events):
        super().explain(events)
        late = late_invoices_of(events=events)
        for event in events:
            if (invoice := late.get(event.id)) is not None:
                label = f"invoice {n}" if (n := invoice.invoice_number) else invoice_label(invoice)
                reasons = (*event.feed.reasons, f"late: after {label}")
                event.feed = replace(event.feed, reasons=reasons)


from billing import alert_admin  # noqa: E402, F401  (registers alerts, budgets and emails)
