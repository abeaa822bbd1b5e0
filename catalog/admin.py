from django import forms
from django.contrib import admin, messages
from django.db import IntegrityError
from django.urls import reverse
from django.utils.html import format_html

from catalog.forms import (
    FiltersField,
    FrozenPriceForm,
    MeterInlineFormSet,
    PlanPriceInlineForm,
    PlanPriceInlineFormSet,
    TierInlineFormSet,
)
from catalog.models import Feature, Meter, Plan, Price, PriceTier
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


class MeterForm(forms.ModelForm):
    filters = FiltersField()

    class Meta:
        model = Meter
        fields = ["event_name", "aggregation", "field", "multiplier", "filters", "reset_usage"]


class MeterInline(TallyStackedInline):
    model = Meter
    form = MeterForm
    formset = MeterInlineFormSet
    extra = 1
    max_num = 1
    can_delete = False


@admin.register(Feature)
class FeatureAdmin(TallyAdmin):
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

    @admin.display(description="Meter")
    def meter_summary(self, obj):
        meter = getattr(obj, "meter", None)
        if meter is None:
            return "—"
        filters = "; ".join(f"{f['key']}: {', '.join(f['values'])}" for f in meter.filters)
        return f"{meter}" + (f" where {filters}" if filters else "")


class PriceForm(FrozenPriceForm):
    def clean_currency(self):
        return (self.cleaned_data.get("currency") or "").lower()


class PlanPriceForm(PriceForm, PlanPriceInlineForm):
    pass


class PriceInline(TallyStackedInline):
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
        return price_example(obj) if obj.pk else "Save to see an example."


@admin.register(Plan)
class PlanAdmin(TallyAdmin):
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
    inlines = [PriceInline]
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

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and plan_in_use(plan=obj):
            context["frozen_notice"] = PLAN_FROZEN_NOTICE
        return super().render_change_form(request, context, add, change, form_url, obj)


class TierInline(TallyTabularInline):
    model = PriceTier
    formset = TierInlineFormSet
    extra = 3
    fields = ["up_to", "unit_amount", "flat_amount"]


@admin.register(Price)
class PriceAdmin(TallyAdmin):
    form = PriceForm
    list_display = [
        "__str__",
        "plan",
        "type",
        "billing_model",
        "amount",
        "currency",
        "transform",
    ]
    list_filter = ["type", "billing_model", "currency", "plan"]
    search_fields = ["display_name", "lookup_key", "plan__name", "meter__event_name"]
    list_select_related = ["plan", "meter"]
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
        ("Package", {"fields": [("divide_by", "round"), "free_units"]}),
        ("Tiers", {"fields": ["tier_mode"]}),
        ("Billing", {"fields": [("billing_period", "billing_period_count"), "invoice_cadence"]}),
        ("Metadata", {"fields": ["metadata"], "classes": ["collapse"]}),
    ]
    inlines = [TierInline]
    change_form_template = FROZEN_CHANGE_FORM

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and price_in_use(price=obj):
            context["frozen_notice"] = PRICE_FROZEN_NOTICE
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_deleted_objects(self, objs, request):
        # Django lists the invoice lines that protect a price; this says what to do instead.
        if any(price_in_use(price=price) for price in objs):
            self.message_user(request, PRICE_UNDELETABLE, messages.ERROR)
        return super().get_deleted_objects(objs, request)

    @admin.display(description="Transform")
    def transform(self, obj):
        tq = obj.transform_quantity
        return f"÷ {tq['divide_by']:,} ({tq['round']})" if tq else "—"

    @admin.display(description="Worked example")
    def worked_example(self, obj):
        return price_example(obj) if obj.pk else "Save to see an example."


@admin.register(Meter)
class MeterAdmin(TallyAdmin):
    """Meters are edited on their feature; this page exists for search and lookup."""

    list_display = ["__str__", "feature", "reset_usage"]
    search_fields = ["event_name", "feature__name", "feature__lookup_key"]
    list_select_related = ["feature"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Meter._meta.fields]
