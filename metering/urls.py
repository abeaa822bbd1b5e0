from django.urls import path, re_path

from metering.customer_api import (
    CustomerByExternalIdView,
    CustomerDetailView,
    CustomerListView,
    CustomerSearchView,
)

customer_urls = [
    path("customers", CustomerListView.as_view(), name="customer-list"),
    path("customers/search", CustomerSearchView.as_view(), name="customer-search"),
    # External ids may hold "/"; ".../subscriptions" is left to billing's route.
    re_path(
        r"^customers/external/(?P<external_id>(?!.*/subscriptions$)[^\x00]+)$",
        CustomerByExternalIdView.as_view(),
        name="customer-by-external-id",
    ),
    path("customers/<id:pk>", CustomerDetailView.as_view(), name="customer-detail"),
]

urlpatterns = [*customer_urls]
