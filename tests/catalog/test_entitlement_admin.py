"""Entitlements are edited inline on the plan's admin page; their type is the feature's."""

import pytest
from django.urls import reverse

from catalog.models import Entitlement
from tests.catalog.test_admin import management, plan_change_post
from tests.factories import FeatureFactory, PriceFactory

pytestmark = pytest.mark.django_db


def entitlement_row(index: int, **fields) -> dict:
    row = {"is_enabled": "on", "usage_limit": "", "usage_reset_period": "", "static_value": ""}
    row["status"] = "published"
    return {f"entitlements-{index}-{k}": v for k, v in {**row, **fields}.items()}


def test_an_entitlement_added_on_the_plan_form_takes_its_feature_s_type(admin_client):
    price = PriceFactory()
    page = admin_client.get(reverse("admin:catalog_plan_change", args=[price.plan.pk]))
    assert b"Entitlements (what subscribers may use)" in page.content
    data = plan_change_post(
        price.plan,
        **management("entitlements", total=1),
        **entitlement_row(0, feature=price.meter.feature_id, usage_limit="5000"),
    )
    response = admin_client.post(reverse("admin:catalog_plan_change", args=[price.plan.pk]), data)
    assert response.status_code == 302
    (entitlement,) = Entitlement.objects.all()
    assert (entitlement.feature_type, entitlement.usage_limit) == ("metered", 5000)


def test_a_limit_on_a_boolean_feature_is_refused_on_the_form(admin_client):
    price = PriceFactory()
    flag = FeatureFactory(type="boolean")
    data = plan_change_post(
        price.plan,
        **management("entitlements", total=1),
        **entitlement_row(0, feature=flag.pk, usage_limit="5"),
    )
    response = admin_client.post(reverse("admin:catalog_plan_change", args=[price.plan.pk]), data)
    assert response.status_code == 200
    (formset,) = [
        f.formset
        for f in response.context["inline_admin_formsets"]
        if f.formset.prefix == "entitlements"
    ]
    assert "usage limit" in str(formset.errors)
    assert not Entitlement.objects.exists()
