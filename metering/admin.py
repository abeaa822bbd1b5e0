import json

from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html

from catalog.models import Meter
from metering.models import ApiKey, Customer, Event
from metering.selectors import unmatched_customers
from metering.services import api_key_revoke, api_key_secret_set


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["external_id", "name", "email", "created_at"]
    search_fields = ["external_id", "name", "email"]
    readonly_fields = ["id", "created_at", "updated_at"]
    change_list_template = "admin/metering/customer/change_list.html"

    def get_urls(self):
        report = path(
            "unmatched/", self.admin_site.admin_view(self.unmatched_view),
            name="metering_customer_unmatched",
        )
        return [report, *super().get_urls()]

    def unmatched_view(self, request):
        context = {
            **self.admin_site.each_context(request),
            "title": "Events from unknown customers",
            "rows": unmatched_customers()[:500],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/metering/unmatched.html", context)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["id", "prefix", "created_at", "last_used_at", "revoked_at"]
    fields = ["name", *readonly_fields]
    actions = ["revoke"]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        raw = api_key_secret_set(key=obj)
        obj.save()
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
        if connection.vendor == "postgresql" and not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                    [Event._meta.db_table],
                )
                row = cursor.fetchone()
            if row and row[0] > 10000:
                return row[0]
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
class EventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "event_name", "external_customer_id", "timestamp", "ingested_at"]
    list_filter = [EventNameFilter, ("timestamp", admin.DateFieldListFilter)]
    search_fields = ["=event_id", "=external_customer_id"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    ordering = ["-timestamp", "-id"]
    fields = [
        "event_id", "event_name", "external_customer_id", "timestamp", "ingested_at", "source",
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
