from django.urls import path, re_path

from billing import api, services

urlpatterns = [
    path("subscriptions", api.SubscriptionListView.as_view(), name="subscription-list"),
    path("subscriptions/search", api.SubscriptionSearchView.as_view(), name="subscription-search"),
    path("subscriptions/<id:pk>", api.SubscriptionDetailView.as_view(), name="subscription-detail"),
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
    path("invoices", api.InvoiceListView.as_view(), name="invoice-list"),
    path("invoices/search", api.InvoiceSearchView.as_view(), name="invoice-search"),
    path("invoices/preview", api.InvoicePreviewView.as_view(), name="invoice-preview"),
    path("invoices/<id:pk>", api.InvoiceDetailView.as_view(), name="invoice-detail"),
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
]
