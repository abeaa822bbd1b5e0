from django.urls import path

from billing.portal import documents, views
from config import resources  # noqa: F401  (registers the <id:> converter)

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("live/", views.live, name="live"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("password-reset/", views.PasswordResetView.as_view(), name="password-reset"),
    path("password-reset/sent/", views.PasswordResetSentView.as_view(), name="password-reset-sent"),
    path(
        "password-reset/done/",
        views.PasswordResetCompleteView.as_view(),
        name="password-reset-complete",
    ),
    path(
        "password-reset/<uidb64>/<token>/",
        views.PasswordResetConfirmView.as_view(),
        name="password-reset-confirm",
    ),
    path("as/leave/", views.view_as_leave, name="view-as-leave"),
    path("as/<id:customer_id>/", views.view_as, name="view-as"),
    path("events/", views.events, name="events"),
    path("events.csv", views.events_csv, name="events-csv"),
    path("invoices/", views.invoices, name="invoices"),
    path("credits/", views.credits, name="credits"),
    path("credits/buy/", views.credits_buy, name="credits-buy"),
    path("budgets/", views.budgets, name="budgets"),
    path("budgets/<id:budget_id>/clear/", views.budget_clear, name="budget-clear"),
    path("invoices/<id:invoice_id>/", documents.invoice_detail, name="invoice"),
    path("invoices/<id:invoice_id>.pdf", documents.invoice_pdf_download, name="invoice-pdf"),
]
