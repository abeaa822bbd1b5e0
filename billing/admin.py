"""The billing admin: a thin adapter over billing.services; it decides nothing itself."""

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from solo.admin import SingletonModelAdmin

from billing.models import Invoice, InvoiceLineItem, Issuer, Subscription
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
from catalog.models import BillingPeriod
from catalog.money import format_money
from config.admin import TallyAdmin, TallyTabularInline
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
            )
        except ValidationError as error:
            self._service_errors_add(error)

    def _service_errors_add(self, error: ValidationError):
        if not hasattr(error, "error_dict"):
            self.add_error(None, error)
            return
        for field, errors in error.error_dict.items():
            if field in self.fields:
                self.add_error(field, errors)
            else:
                self.add_error(None, [f"{field}: {m}" for e in errors for m in e.messages])


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
            *(f.name for f in Subscription._meta.fields if f.name != "metadata"),
        ]

    def save_model(self, request, obj, form, change):
        if change:
            # Only metadata is editable; write only it, never a stale period or status.
            obj.save(update_fields=["metadata", "updated_at"])
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


class InvoiceLineItemInline(TallyTabularInline):
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

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

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
        "invoice_status",
        "payment_status",
        "period",
        "total_display",
        "last_computed",
    ]
    list_filter = ["invoice_status", "payment_status", RecomputeFilter]
    search_fields = ["^invoice_number", "=customer__external_id"]
    list_select_related = ["customer"]
    change_list_template = "admin/billing/invoice/change_list.html"
    change_form_template = "admin/billing/invoice/change_form.html"
    actions = ["recompute", "finalize", "void"]
    inlines = [InvoiceLineItemInline]
    fieldsets = [
        (None, {"fields": ["id", "number", "customer", "subscription", "billing_reason"]}),
        (
            "Status",
            {
                "fields": [
                    ("invoice_status", "payment_status"),
                    ("finalized_at", "due_date", "voided_at"),
                ]
            },
        ),
        (
            "Amounts",
            {"fields": ["currency", "subtotal_display", "total_display", "last_computed"]},
        ),
        ("Period", {"fields": [("period_start", "period_end")]}),
        ("Record", {"fields": [("created_at", "updated_at")]}),
    ]
    readonly_fields = [
        "id",
        "number",
        "customer",
        "subscription",
        "billing_reason",
        "invoice_status",
        "payment_status",
        "finalized_at",
        "due_date",
        "voided_at",
        "currency",
        "subtotal_display",
        "total_display",
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


# Customers and events, with what billing knows of them (metering's admin cannot know it)


admin.site.unregister(Customer)


@admin.register(Customer)
class CustomerAdmin(metering_admin.CustomerAdmin):
    list_display = [*metering_admin.CustomerAdmin.list_display, "spend"]

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
