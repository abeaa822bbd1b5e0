"""The admin index's overview: a tag, so Django's own AdminSite keeps rendering the index."""

from urllib.parse import urlencode

from django import template
from django.urls import reverse
from django.utils import timezone

from billing.charts import stacked_bars
from billing.overview import RECENT_EVENTS, overview_cached
from catalog.money import format_quantity

register = template.Library()


@register.simple_tag(takes_context=True)
def admin_overview(context) -> dict | None:
    """This month's figures and what needs attention; None for staff who may not see
    invoices."""
    request = context["request"]
    if not request.user.has_perm("billing.view_invoice"):
        return None
    now = timezone.now()
    figures = overview_cached(now=now)
    since = (now - RECENT_EVENTS).strftime("%Y-%m-%d %H:%M:%S")
    events = reverse("admin:metering_event_changelist")
    invoices = reverse("admin:billing_invoice_changelist")
    return {
        "figures": figures,
        "charts": [
            {
                "unit": chart.unit,
                "svg": stacked_bars(
                    labels=chart.labels,
                    series=chart.series,
                    fmt=format_quantity,
                    caption=f"{chart.unit} per day, by feature",
                ),
            }
            for chart in figures.charts
        ],
        "attention": [
            (
                "Invoices that got late usage (last 24 hours)",
                figures.late_invoices,
                reverse("admin:billing_invoice_late_usage"),
            ),
            (
                "Events of unknown customers (last 24 hours)",
                figures.unknown_customer_events,
                reverse("admin:metering_customer_unmatched"),
            ),
            (
                "Events no meter counts (last 24 hours)",
                figures.unmetered_events,
                f"{events}?{urlencode({'metered': 'no', 'timestamp__gte': since})}",
            ),
            (
                "Drafts waiting over a minute for a recompute",
                figures.drafts_waiting,
                f"{invoices}?{urlencode({'recompute': 'waiting'})}",
            ),
        ],
    }
