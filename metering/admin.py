import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html

from catalog.models import Meter
from config.admin import TallyAdmin, TallyTabularInline
from metering.aggregation import property_text
from metering.models import ApiKey, Customer, CustomerUser, Event
from metering.selectors import event_feeds, events_unmetered, unmatched_customers
from metering.services import api_key_create, api_key_revoke, portal_user_create
from metering.storage import storage

admin.site.site_header = admin.site.site_title = "Tally"
admin.site.index_title = "Overview"


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
        if query.where == Event.objects.all().query.where:  # only the manager's own bounds
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


class MeteredFilter(admin.SimpleListFilter):
    title = "meters"
    parameter_name = "metered"

    def lookups(self, request, model_admin):
        return [("no", "No meter counts it")]

    def queryset(self, request, queryset):
        return events_unmetered(queryset) if self.value() == "no" else queryset


PROPERTIES_SHOWN = 160  # characters of an event's properties in the list


def properties_line(properties: dict) -> str:
    """``model=OpenAI O1 · tokens=1200``: each value as filters read it (JSON for objects)."""
    parts = []
    for key, value in sorted(properties.items()):
        text = property_text(value)
        parts.append(f"{key}={json.dumps(value) if text is None else text}")
    line = " · ".join(parts)
    return line if len(line) <= PROPERTIES_SHOWN else line[: PROPERTIES_SHOWN - 1] + "…"


class EventChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        self.result_list = list(self.result_list)
        self.model_admin.explain(self.result_list)  # once per page, not once per row


@admin.register(Event)
class EventAdmin(TallyAdmin):
    list_display = [
        "event_id",
        "event_name",
        "external_customer_id",
        "timestamp",
        "properties_text",
        "feeds",
        "ingested_at",
    ]
    list_filter = [EventNameFilter, MeteredFilter, ("timestamp", admin.DateFieldListFilter)]
    search_fields = ["=event_id", "=external_customer_id"]
    show_full_result_count = False
    list_per_page = 50
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

    def get_changelist(self, request, **kwargs):
        return EventChangeList

    def explain(self, events: list[Event]) -> None:
        """Sets each event's ``feed``: the features it feeds, or why none."""
        for event, feed in zip(events, event_feeds(events=events), strict=True):
            event.feed = feed

    @admin.display(description="Properties")
    def properties_text(self, obj):
        return properties_line(obj.properties)

    @admin.display(description="Feeds")
    def feeds(self, obj):
        feed = getattr(obj, "feed", None)
        if feed is None:
            return "—"
        features = ", ".join(feed.features)
        if not feed.reasons:
            return features
        why = "; ".join(feed.reasons)
        if not features:
            return format_html('<span class="quiet">none: {}</span>', why)
        return format_html('{} <span class="quiet">({})</span>', features, why)

    @admin.display(description="Properties")
    def pretty_properties(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.properties, indent=2, sort_keys=True))
