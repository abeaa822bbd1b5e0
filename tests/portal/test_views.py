"""Portal pages through the Django test client: content, isolation and sign-in."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from billing.models import Invoice
from billing.services import invoice_finalize
from metering.models import Customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo(o1_subscriptions):
    return o1_subscriptions


@pytest.fixture
def acme(client, demo):
    assert client.login(username="acme@example.com", password="acme-demo")
    return client


PAGES = ["portal:home", "portal:live", "portal:events", "portal:events-csv", "portal:invoices"]


@pytest.mark.parametrize("name", PAGES)
def test_anonymous_visitors_are_sent_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response.url.startswith(reverse("portal:login"))


def test_sign_in_with_email_and_password(client, demo):
    page = client.get(reverse("portal:login"))
    assert "csrfmiddlewaretoken" in page.content.decode()
    wrong = client.post(reverse("portal:login"), {"username": "acme@example.com", "password": "x"})
    assert "not right" in wrong.content.decode()
    ok = client.post(
        reverse("portal:login"), {"username": "ACME@example.com", "password": "acme-demo"}
    )
    assert ok.status_code == 302 and ok.url == reverse("portal:home")


def test_login_form_enforces_csrf(demo):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        reverse("portal:login"), {"username": "acme@example.com", "password": "acme-demo"}
    )
    assert response.status_code == 403


def test_home_shows_period_total_usage_and_charts(acme, demo):
    page = acme.get(reverse("portal:home")).content.decode()
    assert "$202.50" in page
    assert "5,000,000" in page and "$15.00 per 1,000,000 tokens" in page
    assert "$75.00" in page and "$120.00" in page and "$7.50" in page
    assert "Cost per day" in page and "Usage per day" in page and "<rect" in page
    assert "Globex" not in page
    assert 'hx-trigger="every 3s"' in page and "htmx" in page


def test_live_panel_answers_204_until_the_invoice_is_recomputed(acme, demo):
    draft = Invoice.objects.get(subscription=demo["acme"], invoice_status="DRAFT")
    since = draft.last_computed_at.isoformat()
    assert acme.get(reverse("portal:live"), {"since": since}).status_code == 204
    fresh = acme.get(reverse("portal:live"), {"since": "old"})
    assert fresh.status_code == 200 and "$202.50" in fresh.content.decode()


def test_events_are_newest_first_filterable_and_exported(acme, demo):
    page = acme.get(reverse("portal:events")).content.decode()
    assert page.index("demo-e7") < page.index("demo-e1")  # e7 is the newer
    assert "demo-e9" not in page  # globex's
    sub = demo["acme"]
    output = [m for m in sub.plan.prices.all() if m.meter.feature.lookup_key == "o1-output"][0]
    filtered = acme.get(reverse("portal:events"), {"feature": output.meter_id}).content.decode()
    assert "demo-e4" in filtered and "demo-e5" in filtered and "demo-e1" not in filtered
    e8_day = (sub.current_period_start - timedelta(hours=1)).date().isoformat()
    dated = acme.get(reverse("portal:events"), {"start": e8_day, "end": e8_day}).content.decode()
    assert "demo-e8" in dated
    before = (sub.current_period_start - timedelta(days=10)).date().isoformat()
    empty = acme.get(reverse("portal:events"), {"end": before}).content.decode()
    assert "No events match." in empty
    exported = b"".join(
        acme.get(reverse("portal:events-csv"), {"feature": output.meter_id}).streaming_content
    ).decode()
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0] == [
        "event_id",
        "event_name",
        "timestamp",
        "properties.model",
        "properties.prompt_type",
        "properties.tokens",
        "billing",
    ]
    assert sorted(r[0] for r in rows[1:]) == ["demo-e4", "demo-e5"]


def test_bad_event_filters_show_their_errors_and_no_events(acme, demo):
    response = acme.get(reverse("portal:events"), {"start": "yesterday", "feature": "meter_nope"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "Enter a valid date" in page and "Select a valid choice" in page
    assert "<form" in page


def test_invoices_list_and_detail_with_packages(acme, demo):
    listing = acme.get(reverse("portal:invoices")).content.decode()
    draft = Invoice.objects.get(subscription=demo["acme"])
    assert "Proposed" in listing and "$202.50" in listing
    detail = acme.get(reverse("portal:invoice", args=[draft.pk])).content.decode()
    assert "Proposed invoice" in detail and "Input Tokens" in detail
    assert "$15.00 per 1,000,000" in detail and ">5<" in detail  # five packages of input
    finalized = invoice_finalize(invoice=draft)
    detail = acme.get(reverse("portal:invoice", args=[draft.pk])).content.decode()
    assert finalized.invoice_number in detail and "window.print()" in detail


def test_another_customers_invoice_is_404(client, demo):
    globex_invoice = Invoice.objects.get(subscription=demo["globex"])
    client.login(username="acme@example.com", password="acme-demo")
    assert client.get(reverse("portal:invoice", args=[globex_invoice.pk])).status_code == 404
    assert client.get(reverse("portal:invoice", args=["inv_nope"])).status_code == 404


def test_staff_view_as_customer_is_read_only(admin_client, demo):
    globex = Customer.objects.get(external_id="globex")
    response = admin_client.post(reverse("portal:view-as", args=[globex.pk]), follow=True)
    page = response.content.decode()
    assert "Viewing as Globex (read-only)" in page and "$15.00" in page
    assert reverse("portal:view-as-leave") in page and "Back to admin" in page
    change = admin_client.get(reverse("admin:metering_customer_change", args=[globex.pk]))
    assert reverse("portal:view-as", args=[globex.pk]) in change.content.decode()


def test_view_as_is_staff_only(client, demo):
    client.login(username="acme@example.com", password="acme-demo")
    globex = Customer.objects.get(external_id="globex")
    response = client.post(reverse("portal:view-as", args=[globex.pk]))
    assert response.status_code == 302 and "admin" in response.url


def test_operator_adds_a_portal_user_from_the_customer_page(admin_client, client, demo):
    acme = Customer.objects.get(external_id="acme")
    url = reverse("admin:metering_customer_portal_user", args=[acme.pk])
    weak = admin_client.post(url, {"email": "cfo@acme.test", "password": "123"})
    assert "too short" in weak.content.decode()
    admin_client.post(url, {"email": "cfo@acme.test", "password": "a-long-Secret-9"})
    assert client.login(username="cfo@acme.test", password="a-long-Secret-9")
    assert "$202.50" in client.get(reverse("portal:home")).content.decode()


def test_an_advance_fee_shows_the_period_it_pays_for(acme, demo):
    from decimal import Decimal

    from billing.services import invoice_propose
    from catalog.models import Price
    from tests.factories import PriceFactory

    sub = demo["acme"]
    PriceFactory(
        plan=sub.plan,
        type=Price.Type.FIXED,
        billing_model=Price.BillingModel.FLAT_FEE,
        meter=None,
        divide_by=None,
        amount=Decimal("20"),
        invoice_cadence=Price.Cadence.ADVANCE,
        display_name="Platform fee",
    )
    draft = invoice_propose(subscription=sub)
    fee = draft.line_items.get(display_name="Platform fee")
    assert fee.period_start == sub.current_period_end
    detail = acme.get(reverse("portal:invoice", args=[draft.pk])).content.decode()
    start, end = fee.period_start, fee.period_end
    assert f"for {start:%b} {start.day} – {end:%b} {end.day}, {end.year}" in detail


# Issue 10: no 500 and no silent change, on any input.


@pytest.mark.parametrize("page", ["99999999999999999999", "0", "-1", "x", "20002"])
def test_a_page_beyond_the_bounds_is_a_400(acme, demo, page):
    response = acme.get(reverse("portal:events"), {"page": page})
    assert response.status_code == 400
    assert "page must be a whole number from 1 to 20,001" in response.content.decode()


@pytest.mark.parametrize("end", ["9999-12-31", "1999-12-31", "0001-01-01"])
def test_a_date_filter_beyond_the_bounds_is_a_400_that_says_why(acme, demo, end):
    response = acme.get(reverse("portal:events"), {"end": end})
    assert response.status_code == 400
    assert "from 2000-01-01 to 2099-12-31" in response.content.decode()


def test_the_csv_refuses_a_bad_filter_before_it_streams(acme, demo):
    response = acme.get(reverse("portal:events-csv"), {"end": "9999-12-31"})
    assert response.status_code == 400
    assert "2099-12-31" in response.content.decode()
    whole = acme.get(reverse("portal:events-csv"), {"end": "2099-12-31"})
    assert whole.status_code == 200
    assert len(list(csv.reader(io.StringIO(b"".join(whole.streaming_content).decode())))) > 1


@pytest.mark.parametrize("path", ["/portal/invoices/%00/", "/portal/as/%00/"])
def test_a_nul_in_a_portal_path_is_a_404(acme, demo, admin_client, path):
    assert acme.get(path).status_code == 404
    assert admin_client.get(path).status_code == 404


@pytest.mark.parametrize("leave", ["back", "sign-out"])
def test_leaving_view_as_keeps_the_staff_session(admin_client, demo, leave):
    globex = Customer.objects.get(external_id="globex")
    admin_client.post(reverse("portal:view-as", args=[globex.pk]))
    if leave == "back":
        response = admin_client.get(reverse("portal:view-as-leave"))
    else:
        response = admin_client.post(reverse("portal:logout"))
    assert response.status_code == 302
    assert response.url == reverse("admin:metering_customer_change", args=[globex.pk])
    assert admin_client.get(reverse("admin:index")).status_code == 200  # still signed in
    # no longer viewing as globex: the admin user has no portal account of its own
    assert admin_client.get(reverse("portal:home")).status_code == 404


def test_a_customer_signing_out_is_signed_out(acme):
    response = acme.post(reverse("portal:logout"))
    assert response.status_code == 302 and response.url == reverse("portal:login")
    assert acme.get(reverse("portal:home")).status_code == 302


def test_view_as_leave_for_a_customer_changes_nothing(acme):
    response = acme.get(reverse("portal:view-as-leave"))
    assert response.status_code == 302
    assert acme.get(reverse("portal:home")).status_code == 200  # still signed in


def test_view_as_is_a_post_so_another_site_cannot_switch_it(admin_client, demo):
    globex = Customer.objects.get(external_id="globex")
    assert admin_client.get(reverse("portal:view-as", args=[globex.pk])).status_code == 405
    assert admin_client.get(reverse("portal:home")).status_code == 404  # still no customer
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(get_user_model().objects.get(username="admin"))
    assert csrf.post(reverse("portal:view-as", args=[globex.pk])).status_code == 403


def test_view_as_needs_view_access_to_customers_and_invoices(client, demo):
    globex = Customer.objects.get(external_id="globex")
    clerk = get_user_model().objects.create_user("clerk", password="clerk-secret-42", is_staff=True)
    clerk.user_permissions.add(Permission.objects.get(codename="view_customer"))
    client.force_login(clerk)
    assert client.post(reverse("portal:view-as", args=[globex.pk])).status_code == 403
    # a session that was switched before the permission went away shows nothing
    session = client.session
    session["portal_view_as"] = globex.pk
    session.save()
    assert client.get(reverse("portal:home")).status_code == 404

    clerk.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    clerk = get_user_model().objects.get(pk=clerk.pk)  # permissions are cached per object
    client.force_login(clerk)
    response = client.post(reverse("portal:view-as", args=[globex.pk]), follow=True)
    assert "Viewing as Globex (read-only)" in response.content.decode()
