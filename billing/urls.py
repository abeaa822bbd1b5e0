from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from billing import api, services

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("subscriptions", api.SubscriptionViewSet, basename="subscription")
router.register("invoices", api.InvoiceViewSet, basename="invoice")

urlpatterns = [
    path(
        "subscriptions/<id:pk>/cancel",
        api.SubscriptionCancelView.as_view(),
        name="subscription-cancel",
    ),
    re_path(
        r"^customers/external/(?P<external_id>[^\x00]+)/subscriptions$",
        api.CustomerSubscriptionsView.as_view(),
        name="customer-subscriptions",
    ),
    # Before the router's, whose ``invoices/<id:pk>`` would take "preview" for an id.
    path("invoices/preview", api.InvoicePreviewView.as_view(), name="invoice-preview"),
    path(
        "invoices/<id:pk>/finalize",
        api.InvoiceActionView.as_view(
            service=services.invoice_finalize, message="invoice finalized"
        ),
        name="invoice-finalize",
    ),
    path(
        "invoices/<id:pk>/late_usage",
        api.InvoiceLateUsageView.as_view(),
        name="invoice-late-usage",
    ),
    path(
        "invoices/<id:pk>/void",
        api.InvoiceActionView.as_view(service=services.invoice_void, message="invoice voided"),
        name="invoice-void",
    ),
    *router.urls,
]
