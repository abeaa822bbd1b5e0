from django.urls import path, re_path
from rest_framework.routers import SimpleRouter

from billing import alert_api, api, entitlement_api, services, wallet_api, webhook_api

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("subscriptions", api.SubscriptionViewSet, basename="subscription")
router.register("invoices", api.InvoiceViewSet, basename="invoice")
router.register("wallets", wallet_api.WalletViewSet, basename="wallet")
router.register("creditgrants", wallet_api.CreditGrantViewSet, basename="creditgrant")
router.register(
    "webhooks/endpoints", webhook_api.WebhookEndpointViewSet, basename="webhook-endpoint"
)
router.register("alerts/setting", alert_api.AlertSettingViewSet, basename="alertsetting")

urlpatterns = [
    path("alerts/search", alert_api.AlertLogSearchView.as_view(), name="alert-search"),
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
    path(
        "invoices/<id:pk>/payment",
        wallet_api.InvoicePaymentView.as_view(),
        name="invoice-payment",
    ),
    # config/urls.py puts these before metering's ``customers/<id:pk>``.
    path("customers/usage", entitlement_api.CustomerUsageView.as_view(), name="customer-usage"),
    re_path(
        r"^customers/external/(?P<external_id>[^\x00]+)/entitlements$",
        entitlement_api.CustomerEntitlementsView.as_view(),
        name="customer-entitlements",
    ),
    path(
        "customers/wallets",
        wallet_api.CustomerWalletsLookupView.as_view(),
        name="customer-wallets-lookup",
    ),
    path(
        "customers/<id:pk>/wallets",
        wallet_api.CustomerWalletsView.as_view(),
        name="customer-wallets",
    ),
    path(
        "wallets/<id:pk>/transactions",
        wallet_api.WalletTransactionsView.as_view(),
        name="wallet-transactions",
    ),
    path(
        "plans/<id:pk>/creditgrants",
        wallet_api.PlanCreditGrantsView.as_view(),
        name="plan-creditgrants",
    ),
    *router.urls,
]
