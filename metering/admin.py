import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html

from catalog.models import Meter
from config.admin import TallyAdmin, TallyTabularInline
from metering.models import ApiKey, Customer, CustomerUser, Event
from metering.selectors import unmatched_customers
from metering.services import api_key_create, api_key_revoke, portal_user_create
from metering.storage import storage


class PortalUserForm(forms.Form):
    email = forms.EmailField()
    password = forms.CharField(widget=forms.PasswordInput, help_text="Share it with them once.")


class CustomerUserInline(TallyTabularInline):
    model = CustomerUser
    fields = ["email", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = True
    verbose_name_plural = "portal users"

    def has_add_permission(self, request, obj=None):
        return False  # added with "Add portal user", which sets a password

    @admin.display(description="Email")
    def email(self, obj):
        return obj.user.email


def site_context(model_admin, request) -> dict:
    return {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta}


@admin.register(Customer)
class CustomerAdmin(TallyAdmin):
    list_display = ["external_id", "name", "email", "created_at"]
    search_fields = ["external_id", "name", "email"]
    readonly_fields = ["id", "created_at", "updated_at"]
    change_list_template = "admin/metering/customer/change_list.html"
    change_form_template = "admin/metering/customer/change_form.html"
    inlines = [CustomerUserInline]

    def get_urls(self):
        site = self.admin_site
        return [
            path(
                "unmatched/",
                site.admin_view(self.unmatched_view),
                name="metering_customer_unmatched",
            ),
            path(
                "<path:object_id>/portal-user/",
                site.admin_view(self.portal_user_view),
                name="metering_customer_portal_user",
            ),
            *super().get_urls(),
        ]

    def portal_user_view(self, request, object_id):
        customer = self.get_object(request, object_id)
        if customer is None or not self.has_change_permission(request, customer):
            raise PermissionDenied
        form = PortalUserForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                portal_user_create(customer=customer, **form.cleaned_data)
            except ValidationError as error:
                for field, problems in error.message_dict.items():
                    form.add_error(field if field in form.fields else None, problems)
            else:
                messages.success(request, f"{form.cleaned_data['email']} can now sign in.")
                return redirect("admin:metering_customer_change", customer.pk)
        context = {
            **site_context(self, request),
            "title": f"Add a portal user for {customer}",
            "form": form,
            "customer": customer,
        }
        return TemplateResponse(request, "admin/metering/portal_user.html", context)

    def unmatched_view(self, request):
        context = {
            **site_context(self, request),
            "title": "Events from unknown customers",
            "rows": unmatched_customers()[:500],
        }
        return TemplateResponse(request, "admin/metering/unmatched.html", context)


@admin.register(ApiKey)
class ApiKeyAdmin(TallyAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["name", *readonly_fields]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw = api_key_create(name=obj.name)
        obj.pk = key.pk  # the admin's redirect and log follow the key the service made
        messages.warning(request, f"Copy this API key now; it is not shown again: {raw}")

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            api_key_revoke(key=key)
        messages.success(request, f"Revoked {queryset.count()} key(s).")


class EstimatedCountPaginator(Paginator):
    """Counting a billion-row log is slow; PostgreSQL's planner estimate is enough here."""

    @cached_property
    def count(self):
        query = self.object_list.query
        if not query.where:
            estimate = storage().estimated_event_count()
            if estimate is not None and estimate > 10000:
                return estimate
        return super().count


class EventNameFilter(admin.SimpleListFilter):
    """Event names from the meters, not a DISTINCT over the whole log."""

    title = "event name"
    parameter_name = "event_name"

    def lookups(self, request, model_admin):
        names = Meter.objects.order_by("event_name").values_list("event_name", flat=True)
        return [(n, n) for n in dict.fromkeys(names)]

    def queryset(self, request, queryset):
        return queryset.filter(event_name=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(TallyAdmin):
    list_display = ["event_id", "event_name", "external_customer_id", "timestamp", "ingested_at"]
    list_filter = [EventNameFilter, ("timestamp", admin.DateFieldListFilter)]
    search_fields = ["=event_id", "=external_customer_id"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-timestamp", "-id"]
    fields = [
        "event_id",
        "event_name",
        "external_customer_id",
        "timestamp",
        "ingested_at",
        "source",
        "pretty_properties",
    ]
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # the log is append-only

    @admin.display(description="Properties")
    def pretty_properties(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.properties, indent=2, sort_keys=True))
