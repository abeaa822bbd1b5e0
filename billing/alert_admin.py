"""The admin of alerts, budgets and their emails. Budgets: the operator sees each
customer's and can override one (locked, the customer cannot change it)."""

from django import forms
from django.contrib import admin
from django.utils.html import format_html

from billing import budgets
from billing.models import BUDGET_PERCENTS, AlertLog, AlertSetting, Budget, OutboxEmail
from catalog.money import format_money
from config.admin import TallyAdmin


class ReadOnlyAdmin(TallyAdmin):
    """Rows Tally writes; the operator reads them."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class BudgetForm(forms.ModelForm):
    alert_percents = forms.TypedMultipleChoiceField(
        choices=[(p, f"{p}%") for p in BUDGET_PERCENTS],
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Email the customer once per period at each.",
    )

    class Meta:
        model = Budget
        fields = ["customer", "feature", "amount", "currency", "alert_percents", "hard_cap"]


@admin.register(Budget)
class BudgetAdmin(TallyAdmin):
    form = BudgetForm
    list_display = [
        "customer",
        "scope",
        "budget",
        "spent_shown",
        "used",
        "hard_cap",
        "capped",
        "set_by",
        "locked",
    ]
    list_filter = ["capped", "hard_cap", "locked", "set_by"]
    search_fields = ["customer__name", "customer__external_id", "feature__name"]
    list_select_related = ["customer", "feature"]
    autocomplete_fields = ["customer"]
    readonly_fields = [
        "set_by",
        "set_by_user",
        "spent_shown",
        "used",
        "reached_percents",
        "capped",
        "evaluated_at",
    ]
    fieldsets = [
        (None, {"fields": ["customer", "feature", "amount", "currency"]}),
        ("Alerts and cap", {"fields": ["alert_percents", "hard_cap", "locked"]}),
        (
            "This period",
            {"fields": ["spent_shown", "used", "reached_percents", "capped", "evaluated_at"]},
        ),
        ("Set by", {"fields": ["set_by", "set_by_user"]}),
    ]

    def get_readonly_fields(self, request, obj=None):
        fixed = ["customer", "feature"] if obj is not None else []
        return [*fixed, *self.readonly_fields]

    @admin.display(description="for")
    def scope(self, budget):
        return budget.feature or "The whole account"

    @admin.display(description="budget", ordering="amount")
    def budget(self, budget):
        return format_money(budget.amount, budget.currency)

    @admin.display(description="spent")
    def spent_shown(self, budget):
        return format_money(budget.spent, budget.currency)

    @admin.display(description="used")
    def used(self, budget):
        percent = budget.percent_used
        return format_html("<strong>{}%</strong>", percent) if percent >= 100 else f"{percent}%"

    def save_model(self, request, obj, form, change):
        """An operator's budget is the operator's: ``locked`` keeps the customer off it."""
        saved = budgets.budget_set(
            customer=obj.customer,
            feature=obj.feature,
            amount=obj.amount,
            currency=obj.currency,
            alert_percents=obj.alert_percents,
            hard_cap=obj.hard_cap,
            user=request.user,
            set_by=Budget.SetBy.OPERATOR,
            locked=obj.locked,
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        budgets.budget_clear(budget=obj, set_by=Budget.SetBy.OPERATOR)

    def delete_queryset(self, request, queryset):
        for budget in queryset:
            self.delete_model(request, budget)


@admin.register(AlertSetting)
class AlertSettingAdmin(ReadOnlyAdmin):
    """Set through the API (``/v1/alerts/setting``); deleting one keeps its log."""

    list_display = ["__str__", "entity_type", "subscription", "feature", "alert_state"]
    list_filter = ["entity_type", "alert_state"]
    search_fields = ["subscription__id", "subscription__customer__name", "feature__name"]
    list_select_related = ["subscription__customer", "feature"]


@admin.register(AlertLog)
class AlertLogAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "customer",
        "alert_type",
        "entity_id",
        "previous_status",
        "alert_status",
        "value",
    ]
    list_filter = ["alert_type", "alert_status", "entity_type"]
    search_fields = ["customer__name", "customer__external_id", "entity_id"]
    list_select_related = ["customer"]
    date_hierarchy = "created_at"

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(OutboxEmail)
class OutboxEmailAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "to", "subject", "sent_at", "attempts"]
    list_filter = [("sent_at", admin.EmptyFieldListFilter)]
    search_fields = ["to", "subject", "key"]
    date_hierarchy = "created_at"

    def has_delete_permission(self, request, obj=None):
        return False
