"""Webhooks in the admin: endpoints to register, and the log of events, deliveries and
attempts, with replay."""

from django import forms
from django.contrib import admin, messages
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.html import format_html

from billing import webhooks
from billing.models import (
    EventType,
    OutboxEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from config.admin import ReadOnly, TallyAdmin, TallyTabularInline


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https", help_text="http or https.")
    event_types = forms.MultipleChoiceField(
        choices=EventType.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: every event type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["url", "event_types", "enabled", "description"]


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TallyAdmin):
    form = WebhookEndpointForm
    list_display = ["url", "enabled", "events", "description", "log", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "description"]
    readonly_fields = ["id", "signing_secret", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["id", "url", "event_types", "enabled", "description"]}),
        ("Signing", {"fields": ["signing_secret", "created_at", "updated_at"]}),
    ]
    actions = ["rotate_secret"]

    @admin.display(description="events")
    def events(self, endpoint):
        return ", ".join(endpoint.event_types) or "all"

    @admin.display(description="deliveries")
    def log(self, endpoint):
        url = reverse("admin:billing_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">log</a>', url, endpoint.pk)

    def response_add(self, request, obj, post_url_continue=None):
        """To the endpoint's page, where its new secret is shown for the receiver."""
        self.message_user(request, "Copy the signing secret below into the receiver.")
        return redirect(reverse("admin:billing_webhookendpoint_change", args=[obj.pk]))

    @admin.display(description="secret")
    def signing_secret(self, endpoint):
        return format_html(
            "<code>{}</code><div class='help'>Verify each request's webhook-signature "
            "with it (Standard Webhooks).</div>",
            endpoint.secret,
        )

    @admin.action(description="Rotate the signing secret")
    def rotate_secret(self, request, queryset):
        for endpoint in queryset:
            webhooks.webhook_endpoint_rotate_secret(endpoint=endpoint)
        self.message_user(request, f"{len(queryset)} secrets rotated; receivers need the new one.")


class WebhookAttemptInline(TallyTabularInline):
    model = WebhookAttempt
    fields = readonly_fields = [
        "attempted_at",
        "status_code",
        "error",
        "duration_ms",
        "replay",
        "response_body",
    ]
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


def _replayed(modeladmin, request, attempts):
    sent = [a for a in attempts if a is not None]
    ok = sum(a.succeeded for a in sent)
    level = messages.SUCCESS if sent and ok == len(sent) else messages.WARNING
    modeladmin.message_user(request, f"Sent {len(sent)}: {ok} succeeded.", level)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly, TallyAdmin):
    list_display = [
        "event",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "event__event_type", "endpoint"]
    search_fields = ["event__id", "endpoint__url"]
    list_select_related = ["event", "endpoint"]
    readonly_fields = [
        "event",
        "endpoint",
        "status",
        "attempts",
        "next_attempt_at",
        "last_attempt_at",
        "last_status_code",
        "created_at",
    ]
    inlines = [WebhookAttemptInline]
    actions = ["replay"]

    @admin.display(description="type", ordering="event__event_type")
    def event_type(self, delivery):
        return delivery.event.event_type

    @admin.action(description="Send again now")
    def replay(self, request, queryset):
        ids = queryset.values_list("pk", flat=True)
        attempts = [webhooks.delivery_send(delivery_id=pk, replay=True) for pk in ids]
        _replayed(self, request, attempts)


class WebhookDeliveryInline(ReadOnly, TallyTabularInline):
    model = WebhookDelivery
    fields = readonly_fields = ["endpoint", "status", "attempts", "last_status_code"]
    extra = 0
    show_change_link = True


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnly, TallyAdmin):
    list_display = ["id", "event_type", "customer", "created_at", "fanned_out_at"]
    list_filter = ["event_type"]
    search_fields = ["id", "customer__external_id"]
    list_select_related = ["customer"]
    readonly_fields = ["id", "event_type", "customer", "data", "created_at", "fanned_out_at"]
    inlines = [WebhookDeliveryInline]
    actions = ["replay"]

    @admin.action(description="Send again now to its endpoints")
    def replay(self, request, queryset):
        attempts = []
        for pk in queryset.values_list("pk", flat=True):
            attempts += webhooks.event_replay(event_id=pk)
        _replayed(self, request, attempts)
