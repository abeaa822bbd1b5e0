from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET

from catalog import pricing
from catalog.forms import (
    FEATURE_HELP,
    METER_HELP,
    PLAN_HELP,
    PRICE_HELP,
    FiltersField,
    FrozenPriceForm,
    MeterInlineFormSet,
    PlanPriceInlineForm,
    PlanPriceInlineFormSet,
    TierInlineFormSet,
    price_example_from_form,
)
from catalog.labels import filters_text, meter_text
from catalog.models import Entitlement, Feature, Meter, Plan, Price, PriceTier
from catalog.money import format_quantity, format_unit_price
from catalog.selectors import plan_in_use, price_example, price_in_use
from catalog.services import plan_version_create
from catalog.validation import PRICE_FROZEN, PRICE_MONEY_TERMS, PRICE_UNDELETABLE
from config.admin import TallyAdmin, TallyStackedInline, TallyTabularInline

FROZEN_CHANGE_FORM = "admin/catalog/frozen_change_form.html"
PRICE_FROZEN_NOTICE = (
    f"{PRICE_FROZEN} Frozen: {', '.join(PRICE_MONEY_TERMS)}. "
    "Display name, description, lookup key and metadata stay editable."
)
PLAN_FROZEN_NOTICE = (
    "Some prices of this plan are billed on invoices; their money terms are frozen and they "
    'cannot be deleted. Duplicate the plan as a new version (Plans → select → "Duplicate as '
    'new version") and change the copy. New prices may still be added here.'
)


# htmx for the live worked example; the script shows each part of a form only when it applies.
SCRIPTS = ["django_htmx/htmx-2.min.js", "catalog/admin.js"]
EXAMPLE_URL = "admin:catalog_price_example"
# Until the operator types a price, there is nothing to work out.
EXAMPLE_PROMPT = "Type the amount and terms to see a worked example."


def example_box(*, text: str, scope: str) -> str:
    """The worked example, recomputed by the example endpoint from the fields in ``scope``
    (the price form, or one inline row) as the operator types."""
    return format_html(
        '<div class="tally-example">'
        '<label>Example quantity <input type="text" name="example_quantity" inputmode="decimal" '
        'class="vTextField tally-example-quantity" placeholder="a typical one"></label>'
        '<p class="tally-example-text" data-testid="worked-example" aria-live="polite" '
        'hx-get="{url}" hx-include="closest {scope}" hx-params="not csrfmiddlewaretoken" '
        'hx-trigger="input delay:250ms from:closest {scope}, change from:closest {scope}">'
        "{text}</p></div>",
        url=reverse(EXAMPLE_URL),
        scope=scope,
        text=text,
    )


class WideMeterPicker:
    """Meter labels name the feature and filters: give the picker room to show them."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "meter":
            field.widget.attrs["data-width"] = "30em"
        return field


def worked_example(price: Price, *, scope: str) -> str:
    return example_box(
        text=EXAMPLE_PROMPT if price._state.adding else price_example(price), scope=scope
    )


class FeatureForm(forms.ModelForm):
    class Meta:
        help_texts = FEATURE_HELP


class MeterForm(forms.ModelForm):
    filters = FiltersField()

    class Meta:
        model = Meter
        fields = ["event_name", "aggregation", "field", "multiplier", "filters", "reset_usage"]
        help_texts = METER_HELP


class MeterInline(TallyStackedInline):
    model = Meter
    form = MeterForm
    formset = MeterInlineFormSet
    extra = 1
    max_num = 1
    can_delete = False


@admin.register(Feature)
class FeatureAdmin(TallyAdmin):
    form = FeatureForm
    list_display = ["name", "lookup_key", "type", "meter_summary", "created_at"]
    list_filter = ["type"]
    search_fields = ["name", "lookup_key", "meter__event_name"]
    readonly_fields = ["id"]
    fields = [
        "id",
        "name",
        "lookup_key",
        "type",
        "unit_singular",
        "unit_plural",
        "description",
        "metadata",
    ]
    prepopulated_fields = {"lookup_key": ["name"]}
    inlines = [MeterInline]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("meter")

    class Media:
        js = SCRIPTS

    @admin.display(description="Meter")
    def meter_summary(self, obj):
        meter = getattr(obj, "meter", None)
        if meter is None:
            return "—"
        # The feature's name is the row's own column; lead with the event name instead.
        return meter_text(
            lead=meter.event_name,
            aggregation=meter.aggregation,
            field=meter.field,
            filters=meter.filters,
        )


class PriceForm(FrozenPriceForm):
    class Meta:
        help_texts = PRICE_HELP

    def clean_currency(self):
        return (self.cleaned_data.get("currency") or "").lower()


class PlanPriceForm(PriceForm, PlanPriceInlineForm):
    pass


class PriceInline(WideMeterPicker, TallyStackedInline):
    model = Price
    form = PlanPriceForm
    formset = PlanPriceInlineFormSet
    extra = 0
    show_change_link = True
    fields = [
        ("meter", "type", "billing_model"),
        ("amount", "currency"),
        ("divide_by", "round", "free_units"),
        ("billing_period", "billing_period_count", "invoice_cadence"),
        ("display_name", "lookup_key"),
        "worked_example",
    ]
    readonly_fields = ["worked_example"]
    autocomplete_fields = ["meter"]

    @admin.display(description="Worked example")
    def worked_example(self, obj):
        return worked_example(obj, scope=".inline-related")


class EntitlementForm(forms.ModelForm):
    class Meta:
        model = Entitlement
        fields = [
            "feature",
            "is_enabled",
            "usage_limit",
            "usage_reset_period",
            "is_soft_limit",
            "static_value",
            "status",
        ]

    def clean(self):
        """The entitlement's type is its feature's: the operator does not pick it."""
        data = super().clean()
        if data.get("feature") is not None:
            self.instance.feature_type = data["feature"].type
        return data


class EntitlementInline(TallyTabularInline):
    model = Entitlement
    form = EntitlementForm
    extra = 0
    autocomplete_fields = ["feature"]
    verbose_name_plural = "Entitlements (what subscribers may use)"


class PlanForm(forms.ModelForm):
    class Meta:
        help_texts = PLAN_HELP


@admin.register(Plan)
class PlanAdmin(TallyAdmin):
    form = PlanForm
    list_display = ["name", "lookup_key", "version", "active", "price_count", "created_at"]
    list_filter = ["active"]
    search_fields = ["name", "lookup_key"]
    readonly_fields = ["id", "version", "previous_version"]
    fields = [
        "id",
        "name",
        "lookup_key",
        ("version", "previous_version"),
        "description",
        "active",
        "metadata",
    ]
    inlines = [PriceInline, EntitlementInline]
    actions = ["duplicate_as_new_version"]
    change_form_template = FROZEN_CHANGE_FORM

    @admin.display(description="Prices")
    def price_count(self, obj):
        return obj.prices.count()

    @admin.action(description="Duplicate as new version")
    def duplicate_as_new_version(self, request, queryset):
        for plan in queryset:
            try:
                copy = plan_version_create(plan=plan)
            except IntegrityError:  # another copy took the same lookup keys meanwhile
                self.message_user(
                    request,
                    f"{plan.name} was being copied at the same time; try again.",
                    messages.ERROR,
                )
                continue
            url = reverse("admin:catalog_plan_change", args=[copy.pk])
            self.message_user(
                request,
                format_html('Created <a href="{}">{}</a> from {}.', url, copy.name, plan.name),
                messages.SUCCESS,
            )

    class Media:
        js = SCRIPTS

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and plan_in_use(plan=obj):
            context["frozen_notice"] = PLAN_FROZEN_NOTICE
        if obj is not None:
            # TIERED prices are added there, with their tiers; saving returns here.
            context["add_price_url"] = f"{reverse('admin:catalog_price_add')}?plan={obj.pk}"
        return super().render_change_form(request, context, add, change, form_url, obj)


class TierInline(TallyTabularInline):
    """Shown only for TIERED prices (catalog/admin.js); other prices get no empty rows."""

    model = PriceTier
    formset = TierInlineFormSet
    fields = ["up_to", "unit_amount", "flat_amount"]

    def get_extra(self, request, obj=None, **kwargs):
        if obj is None:
            return 2  # hidden until the operator picks TIERED
        return 1 if obj.billing_model == pricing.TIERED else 0


@admin.register(Price)
class PriceAdmin(WideMeterPicker, TallyAdmin):
    form = PriceForm
    list_display = [
        "__str__",
        "plan",
        "type",
        "billing_model",
        "amount_display",
        "currency",
        "transform",
    ]
    list_filter = ["type", "billing_model", "currency", "plan"]
    search_fields = [
        "display_name",
        "lookup_key",
        "plan__name",
        "meter__event_name",
        "meter__feature__name",
    ]
    list_select_related = ["plan", "meter__feature"]
    autocomplete_fields = ["plan", "meter"]
    readonly_fields = ["id", "worked_example"]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "plan",
                    "meter",
                    "type",
                    "billing_model",
                    "display_name",
                    "lookup_key",
                    "description",
                ]
            },
        ),
        ("Amount", {"fields": [("amount", "currency"), "worked_example"]}),
        (
            "Package",
            {"fields": [("divide_by", "round"), "free_units"], "classes": ["tally-package"]},
        ),
        ("Tiers", {"fields": ["tier_mode"], "classes": ["tally-tiered"]}),
        ("Billing", {"fields": [("billing_period", "billing_period_count"), "invoice_cadence"]}),
        ("Metadata", {"fields": ["metadata"], "classes": ["collapse"]}),
    ]
    inlines = [TierInline]
    change_form_template = FROZEN_CHANGE_FORM

    class Media:
        js = SCRIPTS

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("meter__feature")

    def get_urls(self):
        example = self.admin_site.admin_view(require_GET(self.example_view))
        return [path("example/", example, name="catalog_price_example"), *super().get_urls()]

    def example_view(self, request):
        """The worked example for the unsaved values of a price form or plan inline row."""
        if not (self.has_view_or_change_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        # Half-typed terms are the normal state of a form being filled in, so the reason is
        # the answer (200), shown where the example goes.
        text, ok = price_example_from_form(request.GET, prefix=request.GET.get("prefix", ""))
        css = "tally-example-ok" if ok else "errornote"
        return HttpResponse(format_html('<span class="{}">{}</span>', css, text))

    def response_add(self, request, obj, post_url_continue=None):
        # Came from a plan's "Add a price to this plan": go back to the plan.
        if "plan" in request.GET and not {"_continue", "_addanother", "_popup"} & set(request.POST):
            return HttpResponseRedirect(reverse("admin:catalog_plan_change", args=[obj.plan_id]))
        return super().response_add(request, obj, post_url_continue)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and price_in_use(price=obj):
            context["frozen_notice"] = PRICE_FROZEN_NOTICE
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_deleted_objects(self, objs, request):
        # Django lists the invoice lines that protect a price; this says what to do instead.
        if any(price_in_use(price=price) for price in objs):
            self.message_user(request, PRICE_UNDELETABLE, messages.ERROR)
        return super().get_deleted_objects(objs, request)

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, obj):
        return format_unit_price(obj.amount, obj.currency)

    @admin.display(description="Transform")
    def transform(self, obj):
        tq = obj.transform_quantity
        text = f"÷ {tq['divide_by']:,} ({tq['round']})" if tq else "—"
        return text + (f", {format_quantity(obj.free_units)} free" if obj.free_units else "")

    @admin.display(description="Worked example")
    def worked_example(self, obj):
        return worked_example(obj, scope="form")


@admin.register(Meter)
class MeterAdmin(TallyAdmin):
    """Meters are edited on their feature; this page exists for search and lookup."""

    list_display = ["__str__", "feature", "event_name", "reset_usage"]
    # Found by feature and by filter values, e.g. "sonnet input" in the price's meter picker.
    search_fields = ["name", "event_name", "feature__name", "feature__lookup_key", "filters"]
    list_select_related = ["feature"]
    ordering = ["feature__name"]
    fields = readonly_fields = [
        "id",
        "feature",
        "name",
        "event_name",
        "aggregation",
        "field",
        "multiplier_display",
        "filters_display",
        "reset_usage",
    ]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("feature")

    def has_add_permission(self, request):
        return False

    @admin.display(description="Multiplier")
    def multiplier_display(self, obj):
        return "—" if obj.multiplier is None else format_quantity(obj.multiplier)

    @admin.display(description="Filters")
    def filters_display(self, obj):
        return filters_text(obj.filters) or "—"
