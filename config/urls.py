from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.api import bad_request, not_found, page_not_found, permission_denied, server_error

public = {"authentication_classes": [], "permission_classes": []}

api = [
    path("", include("catalog.urls")),
    # Before metering's: ``customers/wallets`` is not a customer's id.
    path("", include("billing.urls")),
    path("", include("metering.urls")),
    path("", include("metering.api")),
    path("schema/", SpectacularAPIView.as_view(**public), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema", **public), name="docs"),
]

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("portal/", include("billing.portal.urls")),
    path("v1/", include(api)),
    re_path(r"^v1(/|$)", not_found),
]

handler400 = bad_request
handler403 = permission_denied
handler404 = page_not_found
handler500 = server_error
