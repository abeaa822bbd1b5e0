from django.urls import path
from rest_framework.routers import SimpleRouter

from catalog import api

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("features", api.FeatureViewSet, basename="feature")
router.register("plans", api.PlanViewSet, basename="plan")
router.register("prices", api.PriceViewSet, basename="price")
router.register("entitlements", api.EntitlementViewSet, basename="entitlement")

urlpatterns = [
    path(
        "plans/<id:pk>/entitlements", api.PlanEntitlementsView.as_view(), name="plan-entitlements"
    ),
    *router.urls,
]
