from django.urls import re_path
from rest_framework.routers import SimpleRouter

from metering.customer_api import CustomerByExternalIdView, CustomerViewSet

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("customers", CustomerViewSet, basename="customer")

customer_urls = [
    # External ids may hold "/"; ".../subscriptions" is left to billing's route.
    re_path(
        r"^customers/external/(?P<external_id>(?!.*/subscriptions$)[^\x00]+)$",
        CustomerByExternalIdView.as_view(),
        name="customer-by-external-id",
    ),
    *router.urls,
]

urlpatterns = [*customer_urls]
