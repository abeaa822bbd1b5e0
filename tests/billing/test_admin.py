"""The billing admin: subscriptions through subscription_create, invoice actions, late usage."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import Permission, User
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from billing.models import Invoice, Subscription
from billing.selectors import late_events, late_usage
from billing.services import periods_close
from catalog.money import format_money
from tests.factories import CustomerFactory, SubscriptionFactory, ingest

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:billing_invoice_changelist"


@pytest.fixture
def plan(o1_plan):
    return o1_plan


@pytest.fixture
def subs(o1_subscriptions):
    return o1_subscriptions


def draft_of(subscription) -> Invoice:
    return Invoice.objects.get(subscription=subscription, invoice_status=Invoice.Status.DRAFT)


def messages_of(response) -> list[tuple[str, str]]:
    """The messages the response showed; ``act`` follows its redirect, which uses them up."""
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


def act(client, action: str, *invoices, confirm=True, url=CHANGELIST):
    data = {"action": action, "_selected_action": [i.pk for i in invoices]}
    if confirm:
        data["post"] = "yes"
    return client.post(reverse(url), data, follow=True)


def tokens(customer: str, event_id: str, at, amount=1, prompt_type="input") -> dict:
    return {
        "event_id": event_id,
        "event_name": "tokens",
        "external_customer_id": customer,
        "timestamp": at.isoformat(),
        "properties": {"model": "OpenAI O1", "prompt_type": prompt_type, "tokens": amount},
    }


# Subscriptions


def subscription_post(customer, plan, **overrides) -> dict:
    return {
        "customer": customer.pk,
        "plan": plan.pk,
        "currency": "",
        "billing_period": "",
        "billing_cycle": "anniversary",
        "start_date_0": "",
        "start_date_1": "",
        "end_date_0": "",
        "end_date_1": "",
        **overrides,
    }


def test_operator_creates_a_subscription_through_the_service(admin_client, plan):
    customer = CustomerFactory(external_id="initech", name="Initech")

    page = admin_client.get(reverse("admin:billing_subscription_add"))
    assert page.status_code == 200
    assert "Plan&#x27;s billing period" in page.content.decode()

    response = admin_client.post(
        reverse("admin:billing_subscription_add"), subscription_post(customer, plan)
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    subscription = Subscription.objects.get(customer=customer)
    assert (subscription.currency, subscription.billing_period) == ("usd", "MONTHLY")
    assert subscription.current_period_end > subscription.current_period_start
    # subscription_create proposes the first invoice; a bare model save would not.
    assert draft_of(subscription).total == Decimal("0.00")


def test_refused_subscription_shows_the_service_error_and_saves_nothing(admin_client, plan):
    customer = CustomerFactory(external_id="initech", name="Initech")

    response = admin_client.post(
        reverse("admin:billing_subscription_add"),
        subscription_post(customer, plan, currency="eur"),
    )

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["currency"] == ["Plan 'OpenAI O1' has no prices in eur."]
    assert "has no prices in eur" in response.content.decode()
    assert not Subscription.objects.exists()
    assert not Invoice.objects.exists()


def test_end_date_before_start_lands_on_its_field(admin_client, plan):
    customer = CustomerFactory(external_id="initech", name="Initech")

    response = admin_client.post(
        reverse("admin:billing_subscription_add"),
        subscription_post(
            customer,
            plan,
            start_date_0="2026-11-03",
            start_date_1="10:00:00",
            end_date_0="2026-11-01",
            end_date_1="10:00:00",
        ),
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["end_date"] == [
        "end_date must be after start_date."
    ]
    assert not Subscription.objects.exists()


def test_subscription_change_page_edits_only_metadata_and_the_threshold(admin_client, subs):
    sub = subs["acme"]
    url = reverse("admin:billing_subscription_change", args=[sub.pk])
    page = admin_client.get(url)
    assert page.status_code == 200
    assert list(page.context["adminform"].form.fields) == ["auto_invoice_threshold", "metadata"]

    response = admin_client.post(url, {"metadata": '{"tier": "gold"}', "currency": "eur"})

    assert response.status_code == 302
    sub.refresh_from_db()
    assert (sub.metadata, sub.currency) == ({"tier": "gold"}, "usd")


def test_cancel_action_cancels_at_period_end(admin_client, subs):
    url = "admin:billing_subscription_changelist"
    asked = act(admin_client, "cancel_at_end_of_period", subs["acme"], confirm=False, url=url)
    assert asked.status_code == 200
    assert "Cancel subscriptions at the end of their period?" in asked.content.decode()
    assert not Subscription.objects.get(pk=subs["acme"].pk).cancel_at_period_end

    done = act(admin_client, "cancel_at_end_of_period", subs["acme"], url=url)

    assert done.redirect_chain
    acme = Subscription.objects.get(pk=subs["acme"].pk)
    assert acme.cancel_at_period_end and acme.status == Subscription.Status.ACTIVE
    assert acme.end_date == acme.current_period_end
    assert not Subscription.objects.get(pk=subs["globex"].pk).cancel_at_period_end


def test_subscription_changelist_searches_by_customer(admin_client, subs):
    page = admin_client.get(reverse("admin:billing_subscription_changelist"), {"q": "Globex"})
    assert [s.pk for s in page.context["cl"].result_list] == [subs["globex"].pk]


# Invoices


def test_invoice_changelist_shows_totals_and_last_computed_age(admin_client, subs):
    page = admin_client.get(reverse(CHANGELIST))

    html = page.content.decode()
    assert "$202.50" in html and "$15.00" in html
    assert re.search(r"\d+ seconds? ago", html)
    assert reverse("admin:billing_invoice_late_usage") in html
    searched = admin_client.get(reverse(CHANGELIST), {"q": "acme"})
    assert [i.customer.external_id for i in searched.context["cl"].result_list] == ["acme"]


def test_invoices_cannot_be_added_edited_or_deleted_by_hand(admin_client, subs):
    draft = draft_of(subs["acme"])
    assert admin_client.get(reverse("admin:billing_invoice_add")).status_code == 403
    url = reverse("admin:billing_invoice_change", args=[draft.pk])
    admin_client.post(url, {"total": "1.00", "invoice_status": "FINALIZED"})
    draft.refresh_from_db()
    assert (draft.total, draft.invoice_status) == (Decimal("202.50"), "DRAFT")
    delete = admin_client.get(reverse("admin:billing_invoice_delete", args=[draft.pk]))
    assert delete.status_code == 403


def test_recompute_action_picks_up_new_usage(admin_client, subs):
    acme = subs["acme"]
    ingest(tokens("acme", "extra-1", acme.current_period_start + timedelta(minutes=30)))
    assert draft_of(acme).total == Decimal("202.50")  # not recomputed yet

    response = act(admin_client, "recompute", draft_of(acme), confirm=False)

    assert response.redirect_chain
    # 5,000,001 input tokens round up to 6 packages of a million at $15.
    assert draft_of(acme).total == Decimal("217.50")
    draft = draft_of(acme)
    assert messages_of(response) == [("success", f"Recomputed 1 invoice(s): {draft.pk} (DRAFT).")]


def test_finalize_asks_first_then_finalizes(admin_client, subs):
    draft = draft_of(subs["acme"])

    asked = act(admin_client, "finalize", draft, confirm=False)
    assert asked.status_code == 200
    assert "Finalize these invoices?" in asked.content.decode()
    assert Invoice.objects.get(pk=draft.pk).invoice_status == "DRAFT"

    done = act(admin_client, "finalize", draft)

    invoice = Invoice.objects.get(pk=draft.pk)
    assert invoice.invoice_status == "FINALIZED"
    assert re.fullmatch(r"INV-\d{6}-\d{5}", invoice.invoice_number)
    assert messages_of(done) == [
        ("success", f"Finalized 1 invoice(s): {invoice.invoice_number} (FINALIZED).")
    ]


def test_illegal_transitions_are_reported_and_the_rest_proceed(admin_client, subs):
    acme, globex = draft_of(subs["acme"]), draft_of(subs["globex"])
    act(admin_client, "finalize", acme)
    acme.refresh_from_db()
    act(admin_client, "void", acme)

    response = act(admin_client, "void", acme, globex)  # acme a second time

    assert Invoice.objects.get(pk=globex.pk).invoice_status == "VOIDED"
    assert messages_of(response) == [
        (
            "error",
            f"Invoice {acme.invoice_number} (acme): A VOIDED invoice cannot be voided.",
        ),
        ("success", f"Voided 1 invoice(s): {globex.pk} (VOIDED)."),
    ]
    refinalize = act(admin_client, "finalize", acme)
    assert messages_of(refinalize) == [
        (
            "error",
            f"Invoice {acme.invoice_number} (acme): "
            "Only a DRAFT invoice can be finalized; this one is VOIDED.",
        )
    ]
    recompute = act(admin_client, "recompute", acme, confirm=False)
    assert messages_of(recompute) == [
        (
            "error",
            f"Invoice {acme.invoice_number} (acme): "
            "Only a DRAFT is recomputed; this one is VOIDED.",
        )
    ]


def test_recompute_refuses_the_draft_of_a_cancelled_subscription(admin_client, subs):
    draft = draft_of(subs["globex"])
    Subscription.objects.filter(pk=subs["globex"].pk).update(status="cancelled")

    response = act(admin_client, "recompute", draft, confirm=False)

    assert messages_of(response) == [
        (
            "error",
            f"Invoice {draft.pk} (globex): Only the draft of an active subscription is recomputed.",
        )
    ]


def test_finalized_invoice_page_shows_read_only_lines(admin_client, subs):
    draft = draft_of(subs["acme"])
    act(admin_client, "finalize", draft)

    page = admin_client.get(reverse("admin:billing_invoice_change", args=[draft.pk]))

    html = page.content.decode()
    assert page.status_code == 200
    for text in ["Input Tokens", "5,000,000", "$75.00", "Output Tokens", "$120.00", "$202.50"]:
        assert text in html
    assert 'name="_save"' not in html
    # Only the formset's hidden bookkeeping inputs: nothing on a line can be edited.
    assert set(re.findall(r'name="line_items-0-(\w+)"', html)) <= {"id", "invoice"}


def test_actions_need_the_change_permission(client, subs):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client.force_login(user)
    draft = draft_of(subs["acme"])

    page = client.get(reverse(CHANGELIST))
    assert page.status_code == 200 and "$202.50" in page.content.decode()
    act(client, "finalize", draft)

    assert Invoice.objects.get(pk=draft.pk).invoice_status == "DRAFT"


# Late usage


def test_late_usage_lists_events_that_arrived_after_the_invoice_closed(admin_client, subs):
    acme = subs["acme"]
    closed_start = acme.current_period_start
    closed_at = acme.current_period_end + timedelta(minutes=5)
    with time_machine.travel(closed_at, tick=False):
        assert periods_close(now=timezone.now()) == 2
    closed = Invoice.objects.get(subscription=acme, period_start=closed_start)
    assert closed.invoice_status == "FINALIZED"
    acme.refresh_from_db()

    later = closed_at + timedelta(minutes=10)
    with time_machine.travel(later, tick=False):
        ingest(
            tokens("acme", "late-1", closed_start + timedelta(minutes=30)),
            tokens("acme", "open-1", acme.current_period_start + timedelta(minutes=1)),
            tokens("globex", "open-2", later - timedelta(minutes=1)),
        )

    page = admin_client.get(reverse("admin:billing_invoice_late_usage"))  # the session is fresh
    html = page.content.decode()
    assert page.status_code == 200
    assert "late-1" in html and closed.invoice_number in html
    assert "open-1" not in html and "open-2" not in html
    assert "demo-e1" not in html  # arrived before the invoice closed
    [group] = page.context["groups"]
    assert (group["late"].invoice, group["late"].event_count) == (closed, 1)
    assert [e.event_id for e in group["events"]] == ["late-1"]


def test_late_usage_selector_stops_at_its_limits(subs):
    acme = subs["acme"]
    start = acme.current_period_start
    with time_machine.travel(acme.current_period_end + timedelta(minutes=5), tick=False):
        periods_close(now=timezone.now())
    with time_machine.travel(acme.current_period_end + timedelta(minutes=10), tick=False):
        ingest(*(tokens("acme", f"late-{n}", start + timedelta(minutes=n)) for n in range(5)))
        ingest(tokens("globex", "late-g", start + timedelta(minutes=1)))

    [first] = late_usage(limit=1)
    assert first.invoice.customer.external_id in ("acme", "globex")
    everything = {g.invoice.customer.external_id: g.event_count for g in late_usage()}
    assert everything == {"acme": 5, "globex": 1}
    [acme_late] = [g for g in late_usage() if g.invoice.customer.external_id == "acme"]
    assert [e.event_id for e in late_events(late=acme_late, limit=3)] == [
        "late-0",
        "late-1",
        "late-2",
    ]


# Lists, the customer page and the event list, with what billing knows


def test_subscription_and_customer_lists_show_this_periods_spend(admin_client, subs):
    for name, url in (
        ("subscription", reverse("admin:billing_subscription_changelist")),
        ("customer", reverse("admin:metering_customer_changelist")),
    ):
        page = admin_client.get(url)
        rows = {
            (obj.customer if name == "subscription" else obj).external_id: obj.period_spend
            for obj in page.context["cl"].result_list
        }
        assert rows == {key: draft_of(sub).total for key, sub in subs.items()}, name
        html = page.content.decode()
        for sub in subs.values():
            assert f'<td class="field-spend">{format_money(draft_of(sub).total, "usd")}' in html


def test_spend_columns_cost_the_same_queries_for_one_row_or_many(
    admin_client, subs, plan, django_assert_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    urls = [
        reverse("admin:billing_subscription_changelist"),
        reverse("admin:metering_customer_changelist"),
    ]
    before = []
    for url in urls:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(url).status_code == 200
        before.append(len(queries))
    for n in range(5):
        SubscriptionFactory(customer=CustomerFactory(external_id=f"more-{n}"), plan=plan)
    for url, count in zip(urls, before, strict=True):
        with django_assert_num_queries(count):
            admin_client.get(url)


def test_customer_spend_names_its_other_currencies(admin_client, subs):
    from tests.factories import InvoiceFactory

    acme = subs["acme"].customer
    InvoiceFactory(customer=acme, currency="eur", subtotal=Decimal("7.5"), total=Decimal("7.5"))
    page = admin_client.get(reverse("admin:metering_customer_changelist"))
    [row] = [c for c in page.context["cl"].result_list if c.external_id == "acme"]
    assert (row.period_currency, row.period_spend, row.period_currencies) == (
        "eur",
        Decimal("7.5"),
        2,
    )
    assert "€7.50 + 1 other currency" in page.content.decode()


def test_invoice_pages_show_amounts_as_money(admin_client, subs):
    acme = subs["acme"]
    with time_machine.travel(acme.current_period_end + timedelta(minutes=5), tick=False):
        periods_close(now=timezone.now())
    invoices = Invoice.objects.filter(customer__external_id="acme")
    pages = [admin_client.get(reverse(CHANGELIST)).content.decode()] + [
        admin_client.get(reverse("admin:billing_invoice_change", args=[i.pk])).content.decode()
        for i in invoices
    ]
    closed = invoices.get(invoice_status="FINALIZED")
    assert format_money(closed.subtotal, "usd") in pages[1 + list(invoices).index(closed)]
    for html in pages:
        # A raw decimal such as 27.000000000000, not the seconds of a timestamp (":09.445080").
        raw = re.search(r"(?<![\d:])\d+\.\d{5,}0\b|\dE-\d", html)
        assert raw is None, html[raw.start() - 40 : raw.end() + 20]


def test_customer_page_shows_subscriptions_proposed_invoice_past_invoices_and_usage(
    admin_client, subs
):
    acme = subs["acme"]
    with time_machine.travel(acme.current_period_end + timedelta(minutes=5), tick=False):
        periods_close(now=timezone.now())
        closed = Invoice.objects.get(customer=acme.customer, invoice_status="FINALIZED")
        ingest(tokens("acme", "new-1", timezone.now() - timedelta(minutes=1), 2_000_000))
        from billing.services import invoice_propose

        acme.refresh_from_db()
        draft = invoice_propose(subscription=acme)
        admin_client.force_login(User.objects.get(username="admin"))
        page = admin_client.get(reverse("admin:metering_customer_change", args=[acme.customer_id]))
    html = page.content.decode()
    billing = page.context["billing"]
    assert (
        billing.subscriptions == [acme] and billing.drafts == [draft] and billing.past == [closed]
    )
    assert reverse("admin:billing_invoice_change", args=[draft.pk]) in html
    assert f'data-testid="proposed-total">{format_money(draft.total, "usd")}<' in html
    assert closed.invoice_number in html and format_money(closed.total, "usd") in html
    input_line = draft.line_items.get(display_name="Input Tokens")
    assert input_line.quantity == 2_000_000
    assert "2,000,000 tokens" in html and format_money(input_line.amount, "usd") in html


def test_event_list_marks_events_that_arrived_after_their_invoice_closed(admin_client, subs):
    import re

    acme = subs["acme"]
    start = acme.current_period_start
    closed_at = acme.current_period_end + timedelta(minutes=5)
    with time_machine.travel(closed_at, tick=False):
        periods_close(now=timezone.now())
    closed = Invoice.objects.get(subscription=acme, period_start=start)
    with time_machine.travel(closed_at + timedelta(minutes=10), tick=False):
        ingest(
            tokens("acme", "late-1", start + timedelta(minutes=30)),
            tokens("acme", "open-1", closed_at + timedelta(minutes=1)),
        )
        admin_client.force_login(User.objects.get(username="admin"))
        html = admin_client.get(reverse("admin:metering_event_changelist")).content.decode()
    feeds = dict(
        re.findall(
            r'<th class="field-event_id"><a [^>]*>([^<]+)</a></th>.*?'
            r'<td class="field-feeds">(.*?)</td>',
            html,
            re.S,
        )
    )
    assert feeds["late-1"] == (
        f'Input Tokens <span class="quiet">(late: after invoice {closed.invoice_number})</span>'
    )
    assert feeds["open-1"] == "Input Tokens"
    assert feeds["demo-e1"].startswith("Input Tokens") and "late" not in feeds["demo-e1"]


def test_invoice_list_filters_drafts_waiting_for_a_recompute(admin_client, subs):
    from billing.tasks import recompute_requests
    from config.coalesce import _store

    waiting = draft_of(subs["globex"])
    _store().mark(recompute_requests.pending_key, "test-flag", waiting.subscription_id, 1)
    try:
        with time_machine.travel(timezone.now() + timedelta(minutes=2), tick=False):
            admin_client.force_login(User.objects.get(username="admin"))
            page = admin_client.get(reverse(CHANGELIST), {"recompute": "waiting"})
    finally:
        _store().end(recompute_requests.pending_key, waiting.subscription_id, "")
    assert [i.pk for i in page.context["cl"].result_list] == [waiting.pk]
