from django import forms
from django.contrib import admin

from catalog.forms import FiltersField, MeterInlineFormSet, PlanPriceInlineForm, TierInlineFormSet
from catalog.models import Feature, Meter, Plan, Price, PriceTier
from catalog.selectors import price_example


class MeterForm(forms.ModelForm):
    filters = FiltersField()

    class Meta:
        model = Meter
        fields = ["event_name", "aggregation", "field", "multiplier", "filters", "reset_usage"]


class MeterInline(admin.StackedInline):
    model = Meter
    form = MeterForm
    formset = MeterInlineFormSet
    extra = 1
    max_num = 1
    can_delete = False


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
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


class PriceForm(forms.ModelForm):
    def clean_currency(self):
        return (self.cleaned_data.get("currency") or "").lower()


class PlanPriceForm(PriceForm, PlanPriceInlineForm):
    pass


class PriceInline(admin.StackedInline):
    model = Price
    form = PlanPriceForm
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
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "lookup_key", "active", "price_count", "created_at"]
    list_filter = ["active"]
    search_fields = ["name", "lookup_key"]
    readonly_fields = ["id"]
    fields = ["id", "name", "lookup_key", "description", "active", "metadata"]
    inlines = [PriceInline]

    @admin.display(description="Prices")
    def price_count(self, obj):
        return obj.prices.count()


class TierInline(admin.TabularInline):
    model = PriceTier
    formset = TierInlineFormSet
    extra = 3
    fields = ["up_to", "unit_amount", "flat_amount"]


@admin.register(Price)
class PriceAdmin(admin.ModelAdmin):
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

    @admin.display(description="Transform")
    def transform(self, obj):
        tq = obj.transform_quantity
        return f"÷ {tq['divide_by']:,} ({tq['round']})" if tq else "—"

    @admin.display(description="Worked example")
    def worked_example(self, obj):
        return price_example(obj) if obj.pk else "Save to see an example."


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    """Meters are edited on their feature; this page exists for search and lookup."""

    list_display = ["__str__", "feature", "reset_usage"]
    search_fields = ["event_name", "feature__name", "feature__lookup_key"]
    list_select_related = ["feature"]

    def has_add_permission(self, request):
        return False

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Meter._meta.fields]
