from django.urls import path

from catalog import api

urlpatterns = [
    path("features", api.FeatureListView.as_view(), name="feature-list"),
    path("features/search", api.FeatureSearchView.as_view(), name="feature-search"),
    path("features/<id:pk>", api.FeatureDetailView.as_view(), name="feature-detail"),
    path("plans", api.PlanListView.as_view(), name="plan-list"),
    path("plans/search", api.PlanSearchView.as_view(), name="plan-search"),
    path("plans/<id:pk>", api.PlanDetailView.as_view(), name="plan-detail"),
    path("prices", api.PriceListView.as_view(), name="price-list"),
    path("prices/search", api.PriceSearchView.as_view(), name="price-search"),
    path("prices/<id:pk>", api.PriceDetailView.as_view(), name="price-detail"),
]
