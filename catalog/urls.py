from rest_framework.routers import SimpleRouter

from catalog import api

router = SimpleRouter(trailing_slash=False, use_regex_path=False)
router.register("features", api.FeatureViewSet, basename="feature")
router.register("plans", api.PlanViewSet, basename="plan")
router.register("prices", api.PriceViewSet, basename="price")

urlpatterns = router.urls
