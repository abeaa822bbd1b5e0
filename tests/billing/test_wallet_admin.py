"""Wallets in the operator admin: balances on the customer, top-up and debit through the
services (a refusal shows and stores nothing), terminate, mark paid, the ledger, and credit
grants on the plan form."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from billing import ledger
from billing.models import CreditGrant, Invoice, Wallet, WalletTransaction
from billing.services import subscription_create
from billing.wallets import wallet_create, wallet_top_up
from tests.catalog.test_admin import plan_change_post
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
Reason = WalletTransaction.Reason


@pytest.fixture
def acme(o1_subscriptions):
    return o1_subscriptions["acme"]


@pytest.fixture
def wallet(acme):
    """acme's PRE_PAID wallet with 100 credits bought ($1 each); its usage is $202.50."""
    wallet = wallet_create(customer=acme.customer, currency="usd", name="Acme credits")
    wallet_top_up(wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, credits=Decimal(100))
    return wallet


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def ledger_state() -> tuple:
    return (
        WalletTransaction.objects.count(),
        Invoice.objects.count(),
        sorted(WalletTransaction.objects.values_list("credit_amount", flat=True)),
    )


def top_up_url(wallet) -> str:
    return reverse("admin:billing_wallet_top_up", args=[wallet.pk])


def debit_url(wallet) -> str:
    return reverse("admin:billing_wallet_debit", args=[wallet.pk])


def top_up_post(**overrides) -> dict:
    return {
        "credits": "25",
        "reason": "PURCHASED_CREDIT_DIRECT",
        "priority": "",
        "expiry_date": "",
        "description": "",
        "idempotency_key": "k" * 32,
        **overrides,
    }


def test_customer_page_shows_each_wallet_with_its_balance_and_real_time_balance(
    admin_client, wallet
):
    page = admin_client.get(reverse("admin:metering_customer_change", args=[wallet.customer_id]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "Pre Paid" in html and "Active" in html
    assert "$100.00 (100 credits)" in html  # the ledger
    assert "-$102.50 (-102.5 credits)" in html  # less the period's $202.50 of usage, live
    assert reverse("admin:billing_wallet_change", args=[quote(wallet.pk)]) in html
    assert f"{reverse('admin:billing_wallet_add')}?customer={wallet.customer_id}" in html


def test_wallet_list_shows_customer_type_status_and_balance(admin_client, wallet):
    page = admin_client.get(reverse("admin:billing_wallet_changelist"))
    html = page.content.decode()
    for text in ["Acme credits", "Acme AI", "usd", "Pre Paid", "Active", "$100.00 (100 credits)"]:
        assert text in html


def test_operator_tops_up_with_priority_expiry_and_description(admin_client, wallet):
    expiry = (timezone.now() + timedelta(days=30)).replace(second=0, microsecond=0)
    form = admin_client.get(top_up_url(wallet))
    key = form.context["form"].initial["idempotency_key"]
    response = admin_client.post(
        top_up_url(wallet),
        top_up_post(
            credits="25.5",
            reason="FREE_CREDIT_GRANT",
            priority="1",
            expiry_date=expiry.strftime("%Y-%m-%dT%H:%M"),
            description="Goodwill",
            idempotency_key=key,
        ),
        follow=True,
    )
    assert response.redirect_chain[-1][0] == reverse(
        "admin:billing_wallet_change", args=[wallet.pk]
    )
    assert "Added $25.50 (25.5 credits) to Acme credits." in messages_of(response)
    block = WalletTransaction.objects.get(wallet=wallet, transaction_reason="FREE_CREDIT_GRANT")
    assert (block.credit_amount, block.priority, block.expiry_date, block.description) == (
        Decimal("25.5"),
        1,
        expiry,
        "Goodwill",
    )
    assert ledger.balance(wallet) == Decimal("125.5")


def test_submitting_the_same_top_up_form_twice_adds_once(admin_client, wallet):
    for _ in range(2):
        response = admin_client.post(top_up_url(wallet), top_up_post(idempotency_key="a" * 32))
        assert response.status_code == 302
    assert ledger.balance(wallet) == Decimal("125")


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"credits": "0"}, "Top up by more than 0 credits."),
        ({"credits": "-5"}, "Top up by more than 0 credits."),
        ({"credits": "lots"}, "Enter a number."),
        ({"reason": "INVOICE_PAYMENT"}, "Select a valid choice."),
        ({"priority": "-1"}, "greater than or equal to 0"),
        ({"expiry_date": "2001-01-01T00:00"}, "The expiry must be in the future."),
        ({"expiry_date": "2100-01-01T00:00"}, "The expiry must lie from 2000-01-01"),
        (
            {"credits": "10.005", "reason": "PURCHASED_CREDIT_INVOICED"},
            "not a whole amount to invoice",
        ),
    ],
)
def test_a_bad_top_up_shows_why_and_stores_nothing(admin_client, wallet, overrides, error):
    before = ledger_state()
    response = admin_client.post(top_up_url(wallet), top_up_post(**overrides))
    assert response.status_code == 400
    assert error in response.content.decode()
    assert ledger_state() == before


def test_a_closed_wallet_is_not_topped_up(admin_client, wallet):
    wallet.wallet_status = Wallet.Status.FROZEN
    wallet.save()
    before = ledger_state()
    response = admin_client.post(top_up_url(wallet), top_up_post())
    assert response.status_code == 400
    assert "The wallet is frozen; only an active one is topped up." in response.content.decode()
    assert ledger_state() == before


def test_operator_debits_with_a_reason(admin_client, wallet):
    response = admin_client.post(
        debit_url(wallet),
        {"credits": "30", "description": "Refunded off-platform", "idempotency_key": "d" * 32},
        follow=True,
    )
    assert "Debited $30.00 (30 credits) from Acme credits." in messages_of(response)
    debit = WalletTransaction.objects.get(wallet=wallet, type="debit")
    assert (debit.transaction_reason, debit.credit_amount, debit.description) == (
        "MANUAL_BALANCE_DEBIT",
        Decimal("30"),
        "Refunded off-platform",
    )
    assert ledger.balance(wallet) == Decimal("70")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"credits": "30", "description": ""}, "This field is required."),
        ({"credits": "30", "description": "   "}, "This field is required."),
        ({"credits": "100.01", "description": "too much"}, "100.01 are needed"),
        ({"credits": "0", "description": "nothing"}, "Credits must be more than 0."),
    ],
)
def test_a_bad_debit_shows_why_and_stores_nothing(admin_client, wallet, data, error):
    before = ledger_state()
    response = admin_client.post(debit_url(wallet), {**data, "idempotency_key": "e" * 32})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert ledger_state() == before


def test_invoiced_top_up_is_pending_until_the_operator_marks_its_invoice_paid(admin_client, wallet):
    response = admin_client.post(
        top_up_url(wallet),
        top_up_post(credits="50", reason="PURCHASED_CREDIT_INVOICED"),
        follow=True,
    )
    block = WalletTransaction.objects.get(
        wallet=wallet, transaction_reason=Reason.PURCHASED_CREDIT_INVOICED
    )
    invoice = block.invoice
    assert f"They are pending until invoice {invoice.invoice_number} is marked paid." in " ".join(
        messages_of(response)
    )
    assert (invoice.invoice_type, invoice.invoice_status, invoice.total) == (
        "CREDIT",
        "FINALIZED",
        Decimal("50.00"),
    )
    assert ledger.balance(wallet) == Decimal("100")  # not usable yet
    # The purchase line explains itself from its snapshot: 50 credits at $1 each.
    page = admin_client.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))
    assert page.status_code == 200 and "$1.00 per credit" in page.content.decode()

    changelist = reverse("admin:billing_invoice_changelist")
    ask = admin_client.post(changelist, {"action": "mark_paid", "_selected_action": [invoice.pk]})
    assert "Mark these invoices paid?" in ask.content.decode()
    assert Invoice.objects.get(pk=invoice.pk).payment_status == "PENDING"  # not before "yes"

    done = admin_client.post(
        changelist,
        {"action": "mark_paid", "_selected_action": [invoice.pk], "post": "yes"},
        follow=True,
    )
    assert any(m.startswith("Marked paid 1 invoice(s)") for m in messages_of(done))
    invoice.refresh_from_db()
    assert (invoice.payment_status, invoice.amount_paid, invoice.amount_remaining) == (
        "SUCCEEDED",
        Decimal("50.00"),
        Decimal("0"),
    )
    assert ledger.balance(wallet) == Decimal("150")


def test_mark_paid_refuses_a_draft_and_says_why(admin_client, acme):
    draft = Invoice.objects.get(subscription=acme)
    response = admin_client.post(
        reverse("admin:billing_invoice_changelist"),
        {"action": "mark_paid", "_selected_action": [draft.pk], "post": "yes"},
        follow=True,
    )
    assert any("Only a FINALIZED invoice is paid" in m for m in messages_of(response))
    assert Invoice.objects.get(pk=draft.pk).payment_status == "PENDING"


def test_invoice_page_shows_subtotal_credits_total_paid_and_remaining(admin_client, wallet, acme):
    from billing.services import draft_recompute

    draft = draft_recompute(invoice=Invoice.objects.get(subscription=acme))
    html = admin_client.get(reverse("admin:billing_invoice_change", args=[draft.pk])).content
    html = html.decode()
    for label, amount in [
        ("Subtotal", "$202.50"),
        ("Prepaid credits applied", "-$100.00"),
        ("Total", "$102.50"),
        ("Amount paid", "$0.00"),
        ("Amount remaining", "$102.50"),
    ]:
        assert label in html and amount in html
    assert "Subscription" in html


def test_terminate_asks_first_then_debits_what_is_left_and_closes(admin_client, wallet):
    changelist = reverse("admin:billing_wallet_changelist")
    ask = admin_client.post(changelist, {"action": "terminate", "_selected_action": [wallet.pk]})
    assert "Terminate these wallets?" in ask.content.decode()
    assert Wallet.objects.get(pk=wallet.pk).wallet_status == "active"

    admin_client.post(
        changelist, {"action": "terminate", "_selected_action": [wallet.pk], "post": "yes"}
    )
    wallet.refresh_from_db()
    assert wallet.wallet_status == "closed" and ledger.balance(wallet) == 0
    end = WalletTransaction.objects.get(wallet=wallet, transaction_reason="WALLET_TERMINATION")
    assert end.credit_amount == Decimal("100")


def test_operator_adds_a_wallet_through_wallet_create_and_a_second_is_refused(admin_client, acme):
    data = {
        "customer": acme.customer_id,
        "currency": "USD",
        "wallet_type": "POST_PAID",
        "name": "",
        "description": "",
        "conversion_rate": "0.5",
    }
    add = reverse("admin:billing_wallet_add")
    assert admin_client.post(add, data).status_code == 302
    wallet = Wallet.objects.get(customer=acme.customer)
    assert (wallet.currency, wallet.wallet_type, wallet.conversion_rate) == (
        "usd",
        "POST_PAID",
        Decimal("0.5"),
    )
    again = admin_client.post(add, data)
    assert again.status_code == 200
    assert "The customer already has a wallet in this currency." in again.content.decode()
    assert Wallet.objects.filter(customer=acme.customer).count() == 1


def test_wallet_page_lists_the_ledger_filtered_with_its_consumption_breakdown(admin_client, wallet):
    wallet_top_up(wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(5), priority=0)
    admin_client.post(
        debit_url(wallet), {"credits": "8", "description": "test", "idempotency_key": "f" * 32}
    )
    url = reverse("admin:billing_wallet_change", args=[wallet.pk])
    page = admin_client.get(url)
    rows = page.context["ledger"]["rows"]
    assert [(e.type, e.transaction_reason) for e, _ in rows] == [
        ("debit", "MANUAL_BALANCE_DEBIT"),
        ("credit", "FREE_CREDIT_GRANT"),
        ("credit", "PURCHASED_CREDIT_DIRECT"),
    ]
    debit = rows[0][0]
    # Priority 0 is taken first: all 5 free credits, then 3 of the purchase.
    assert [(p.credit.transaction_reason, p.credits) for p in debit.consumptions.all()] == [
        ("FREE_CREDIT_GRANT", Decimal("5")),
        ("PURCHASED_CREDIT_DIRECT", Decimal("3")),
    ]
    assert [r for _, r in rows] == [None, Decimal("0"), Decimal("97")]
    assert "5 from" in page.content.decode()

    debits = admin_client.get(url, {"type": "debit"}).context["ledger"]["rows"]
    assert [e.type for e, _ in debits] == ["debit"]
    granted = admin_client.get(url, {"reason": "FREE_CREDIT_GRANT"}).context["ledger"]["rows"]
    assert [e.transaction_reason for e, _ in granted] == ["FREE_CREDIT_GRANT"]


def test_transactions_list_filters_by_wallet_type_status_reason_and_date(admin_client, wallet):
    other = wallet_create(customer=CustomerFactory(), currency="usd")
    wallet_top_up(wallet=other, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(7))
    url = reverse("admin:billing_wallettransaction_changelist")

    def listed(**params):
        page = admin_client.get(url, params)
        assert page.status_code == 200
        return sorted(
            format(t.credit_amount.normalize(), "f") for t in page.context["cl"].result_list
        )

    assert listed() == ["100", "7"]
    assert listed(wallet__id__exact=wallet.pk) == ["100"]
    assert listed(transaction_reason__exact="FREE_CREDIT_GRANT") == ["7"]
    assert listed(type__exact="debit") == []
    assert listed(transaction_status__exact="completed") == ["100", "7"]
    today = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert listed(created_at__gte=today.isoformat()) == ["100", "7"]
    assert listed(created_at__lt=today.isoformat()) == []

    block = WalletTransaction.objects.get(wallet=wallet)
    detail = admin_client.get(reverse("admin:billing_wallettransaction_change", args=[block.pk]))
    assert detail.status_code == 200 and "drawn by" in detail.content.decode().lower()


def grant_row(index: int, **fields) -> dict:
    row = {
        "name": "Monthly free credits",
        "credits": "5",
        "cadence": "RECURRING",
        "expiration_type": "BILLING_CYCLE",
        "expiration_duration": "",
        "expiration_duration_unit": "",
        "priority": "0",
        "status": "published",
        **fields,
    }
    return {f"credit_grants-{index}-{k}": v for k, v in row.items()}


def test_plan_form_adds_a_credit_grant_that_new_subscribers_get(admin_client, o1_plan):
    existing = subscription_create(customer=CustomerFactory(), plan=o1_plan)
    data = plan_change_post(o1_plan, **{"credit_grants-TOTAL_FORMS": "1"}, **grant_row(0))
    response = admin_client.post(reverse("admin:catalog_plan_change", args=[o1_plan.pk]), data)
    assert response.status_code == 302
    grant = CreditGrant.objects.get(plan=o1_plan)
    assert (grant.scope, grant.credits, grant.cadence, grant.expiration_type) == (
        "PLAN",
        Decimal("5"),
        "RECURRING",
        "BILLING_CYCLE",
    )
    subscription = subscription_create(customer=CustomerFactory(), plan=o1_plan)
    wallet = Wallet.objects.get(customer=subscription.customer)
    assert ledger.balance(wallet) == Decimal("5")
    # and at once to those already subscribed, for their current period, as the API does
    given = Wallet.objects.get(customer=existing.customer).transactions.get()
    assert (given.credit_amount, given.expiry_date) == (Decimal(5), existing.current_period_end)


def test_a_duration_grant_needs_its_duration(admin_client, o1_plan):
    data = plan_change_post(
        o1_plan,
        **{"credit_grants-TOTAL_FORMS": "1"},
        **grant_row(0, expiration_type="DURATION"),
    )
    response = admin_client.post(reverse("admin:catalog_plan_change", args=[o1_plan.pk]), data)
    assert response.status_code == 200
    assert "A DURATION expiry needs it." in response.content.decode()
    assert not CreditGrant.objects.exists()


def test_a_given_grant_keeps_its_money_terms_and_is_archived_not_deleted(admin_client, o1_plan):
    grant = CreditGrant.objects.create(
        name="Monthly", plan=o1_plan, credits=Decimal(5), cadence="RECURRING", priority=0
    )
    subscription_create(customer=CustomerFactory(), plan=o1_plan)  # gives it
    url = reverse("admin:catalog_plan_change", args=[o1_plan.pk])
    existing = {"credit_grants-TOTAL_FORMS": "1", "credit_grants-INITIAL_FORMS": "1"}
    existing["credit_grants-0-id"] = grant.pk
    existing["credit_grants-0-plan"] = o1_plan.pk

    page = admin_client.get(url).content.decode()
    assert "its credits, cadence, expiry and priority are frozen" in page

    changed = {**existing, **grant_row(0, credits="500", cadence="ONETIME", name="Renamed")}
    assert admin_client.post(url, plan_change_post(o1_plan, **changed)).status_code == 302
    grant.refresh_from_db()
    assert (grant.name, grant.credits, grant.cadence) == ("Renamed", Decimal(5), "RECURRING")

    deleting = {**existing, **grant_row(0, name="Renamed"), "credit_grants-0-DELETE": "on"}
    response = admin_client.post(url, plan_change_post(o1_plan, **deleting))
    assert response.status_code == 200 and "Archive it" in response.content.decode()
    assert CreditGrant.objects.filter(pk=grant.pk).exists()

    archived = {**existing, **grant_row(0, name="Renamed", status="archived")}
    assert admin_client.post(url, plan_change_post(o1_plan, **archived)).status_code == 302
    assert CreditGrant.objects.get(pk=grant.pk).status == "archived"


def test_view_only_staff_see_the_wallet_but_cannot_top_up_or_debit(client, wallet):
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_wallet"))
    client.force_login(user)
    page = client.get(reverse("admin:billing_wallet_change", args=[wallet.pk]))
    assert page.status_code == 200 and top_up_url(wallet) not in page.content.decode()
    assert client.get(top_up_url(wallet)).status_code == 403
    assert client.post(top_up_url(wallet), top_up_post()).status_code == 403
    assert client.post(debit_url(wallet), {"credits": "1", "description": "x"}).status_code == 403
    assert ledger.balance(wallet) == Decimal("100")


def wallet_change_post(**overrides) -> dict:
    return {
        "name": "Acme credits",
        "description": "",
        "wallet_status": "active",
        "auto_topup_threshold": "",
        "auto_topup_amount": "",
        "auto_topup_cooldown": "0",
        "alert_settings": "{}",
        "metadata": "{}",
        **overrides,
    }


def test_operator_freezes_a_wallet_and_sets_auto_top_up_through_wallet_update(admin_client, wallet):
    url = reverse("admin:billing_wallet_change", args=[wallet.pk])
    data = wallet_change_post(
        wallet_status="frozen",
        auto_topup_enabled="on",
        auto_topup_threshold="10",
        auto_topup_amount="50",
    )
    assert admin_client.post(url, data).status_code == 302
    wallet.refresh_from_db()
    assert (wallet.wallet_status, wallet.auto_topup_threshold, wallet.auto_topup_amount) == (
        "frozen",
        Decimal("10"),
        Decimal("50"),
    )
    closing = admin_client.post(url, wallet_change_post(wallet_status="closed"))
    assert closing.status_code == 200 and "Select a valid choice." in closing.content.decode()
    assert Wallet.objects.get(pk=wallet.pk).wallet_status == "frozen"


def test_the_wallet_list_reads_its_ledgers_in_a_fixed_number_of_queries(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from billing import wallets
    from tests.factories import CustomerFactory

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as run:
            assert admin_client.get(reverse("admin:billing_wallet_changelist")).status_code == 200
        return len(run.captured_queries)

    def add_wallets(n):
        for _ in range(n):
            wallet = wallets.wallet_create(customer=CustomerFactory(), currency="usd")
            wallets.wallet_top_up(wallet=wallet, reason="FREE_CREDIT_GRANT", credits=Decimal(3))

    add_wallets(2)
    few = page_queries()
    add_wallets(8)
    assert page_queries() == few
