from django.urls import path

from billing.portal import documents, views
from config import resources  # noqa: F401  (registers the <id:> converter)

app_name = "portal"

urlpatterns = [
    path("", views.home, name="home"),
    path("live/", views.live, name="live"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("as/<id:customer_id>/", views.view_as, name="view-as"),
    path("events/", views.events, name="events"),
    path("events.csv", views.events_csv, name="events-csv"),
    path("invoices/", views.invoices, name="invoices"),
    path("invoices/<id:invoice_id>/", documents.invoice_detail, name="invoice"),
    path("invoices/<id:invoice_id>.pdf", documents.invoice_pdf_download, name="invoice-pdf"),
]
