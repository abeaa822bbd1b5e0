"""Prepaid credits in the portal: the balance card, the ledger, credits on invoices and
buying credits (the customer's own wallet only, once per form)."""

import re
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from billing import ledger
from billing.models import Invoice, Wallet, WalletTransaction
from billing.services import draft_recompute, invoice_finalize
from billing.wallets import invoice_payment_update, wallet_create, wallet_debit, wallet_top_up
from metering.models import Customer
from tests.billing.test_invoice_document import pdf_text

pytestmark = pytest.mark.django_db
Reason = WalletTransaction.Reason


@pytest.fixture
def demo(o1_subscriptions):
    return o1_subscriptions


@pytest.fixture
def wallet(demo):
    """acme's credits as the demo gives them: $100 bought, $10 promotional expiring at the
    period's end; its draft ($202.50 of usage) is recomputed to apply them."""
    subscription = demo["acme"]
    wallet = wallet_create(customer=subscription.customer, currency="usd")
    wallet_top_up(wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, credits=Decimal(100))
    wallet_top_up(
        wallet=wallet,
        reason=Reason.FREE_CREDIT_GRANT,
        credits=Decimal(10),
        expiry_date=subscription.current_period_end,
    )
    draft_recompute(invoice=Invoice.objects.get(subscription=subscription))
    return wallet


@pytest.fixture
def acme(client, demo):
    assert client.login(username="acme@example.com", password="acme-demo")
    return client


def by_testid(page: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>([^<]*)<', page)
    assert match, f"no {testid} on the page"
    return match.group(1).strip()


def buy(client, credits="50", key="a" * 32, **extra):
    return client.post(
        reverse("portal:credits-buy"), {"credits": credits, "idempotency_key": key, **extra}
    )


def purchases() -> list[WalletTransaction]:
    return list(
        WalletTransaction.objects.filter(transaction_reason=Reason.PURCHASED_CREDIT_INVOICED)
    )


@pytest.mark.parametrize("name", ["portal:credits", "portal:credits-buy"])
def test_anonymous_visitors_are_sent_to_sign_in(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response.url.startswith(reverse("portal:login"))


def test_home_shows_the_balance_card_next_to_the_proposed_invoice(acme, wallet):
    response = acme.get(reverse("portal:home"))
    card = response.context["card"].balance
    assert (card.balance, card.current_period_usage, card.real_time_balance) == (
        Decimal("110"),
        Decimal("202.50"),
        Decimal("-92.50"),
    )
    page = response.content.decode()
    assert by_testid(page, "balance-ledger") == "$110.00"
    assert by_testid(page, "balance-usage") == "$202.50"
    assert by_testid(page, "balance-real-time") == "-$92.50"
    assert by_testid(page, "proposed-total") == "$92.50"
    assert by_testid(page, "proposed-credits") == "$202.50 less $110.00 of prepaid credits"


def test_the_card_follows_usage_and_the_ledger_to_the_cent(acme, wallet):
    wallet_top_up(wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, credits=Decimal("95.01"))
    wallet_debit(wallet=wallet, credits=Decimal("0.02"), description="rounding test")
    page = acme.get(reverse("portal:home")).content.decode()
    assert by_testid(page, "balance-ledger") == "$204.99"
    assert by_testid(page, "balance-real-time") == "$2.49"


def test_a_customer_without_a_wallet_has_no_card(client, demo):
    client.login(username="globex@example.com", password="globex-demo")
    page = client.get(reverse("portal:home")).content.decode()
    assert 'data-testid="balance-card"' not in page
    assert client.get(reverse("portal:credits")).status_code == 200


def test_credits_page_lists_the_ledger_with_reason_expiry_and_remaining(acme, wallet, demo):
    wallet_debit(wallet=wallet, credits=Decimal(15), description="Adjustment")
    response = acme.get(reverse("portal:credits"))
    rows = [(e.transaction_reason, r) for e, r, _ in response.context["entries"]]
    # The promotion expires first, so it is drawn first: all 10, then 5 of the purchase.
    assert rows == [
        ("MANUAL_BALANCE_DEBIT", None),
        ("FREE_CREDIT_GRANT", Decimal("0")),
        ("PURCHASED_CREDIT_DIRECT", Decimal("95")),
    ]
    page = response.content.decode()
    end = demo["acme"].current_period_end
    assert "Promotional credits" in page and "Credits purchased" in page
    assert f"{end:%Y-%m-%d %H:%M}" in page and "never" in page
    assert "−15" in page and "−$15.00" in page and "Adjustment" in page
    assert "Globex" not in page


def test_credits_page_is_paged(acme, wallet):
    for n in range(49):
        wallet_top_up(wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(n + 1))
    first = acme.get(reverse("portal:credits"))
    assert len(first.context["entries"]) == 50 and first.context["has_next"]
    second = acme.get(reverse("portal:credits"), {"page": 2})
    assert [e.credit_amount for e, _, _ in second.context["entries"]] == [Decimal(100)]
    assert not second.context["has_next"]
    assert acme.get(reverse("portal:credits"), {"page": "0"}).status_code == 400


def test_invoice_page_and_pdf_show_the_credits_applied(acme, wallet, demo):
    invoice = invoice_finalize(invoice=Invoice.objects.get(subscription=demo["acme"]))
    assert (invoice.subtotal, invoice.total_prepaid_credits_applied, invoice.total) == (
        Decimal("202.50"),
        Decimal("110.00"),
        Decimal("92.50"),
    )
    page = acme.get(reverse("portal:invoice", args=[invoice.pk])).content.decode()
    assert by_testid(page, "invoice-subtotal") == "$202.50"
    assert by_testid(page, "credits-applied") == "−$110.00"
    assert by_testid(page, "invoice-total") == "$92.50"
    assert by_testid(page, "amount-due") == "$92.50"
    assert "Prepaid credits applied" in page

    text = pdf_text(acme.get(reverse("portal:invoice-pdf", args=[invoice.pk])).content)
    assert "Prepaid credits applied" in text and "110.00" in text and "$92.50" in text


def test_a_paid_purchase_invoice_shows_what_was_paid(acme, wallet):
    block = wallet_top_up(
        wallet=wallet, reason=Reason.PURCHASED_CREDIT_INVOICED, credits=Decimal(50)
    )
    invoice = invoice_payment_update(invoice=block.invoice, payment_status="SUCCEEDED")
    page = acme.get(reverse("portal:invoice", args=[invoice.pk])).content.decode()
    assert by_testid(page, "amount-paid") == "−$50.00"
    assert by_testid(page, "amount-due") == "$0.00"
    assert by_testid(page, "paid-in-full") == "Paid $50.00"


def test_buy_page_says_payment_comes_later_and_carries_a_fresh_key(acme, wallet):
    first = acme.get(reverse("portal:credits-buy"))
    page = first.content.decode()
    assert "Payment collection comes in a later" in page
    assert "become usable once the invoice is marked paid" in page
    key = first.context["form"].initial["idempotency_key"]
    assert re.fullmatch(r"[0-9a-f]{32}", key) and f'value="{key}"' in page
    assert acme.get(reverse("portal:credits-buy")).context["form"].initial["idempotency_key"] != key


def test_buying_credits_issues_an_invoice_and_pending_credits(acme, wallet):
    response = buy(acme, credits="50")
    (block,) = purchases()
    assert response.status_code == 302
    assert response.url == f"{reverse('portal:credits')}?purchase={block.pk}"
    assert (block.wallet_id, block.transaction_status, block.credit_amount) == (
        wallet.pk,
        "pending",
        Decimal("50"),
    )
    invoice = block.invoice
    assert (invoice.invoice_type, invoice.invoice_status, invoice.payment_status) == (
        "CREDIT",
        "FINALIZED",
        "PENDING",
    )
    assert invoice.total == Decimal("50.00") and invoice.customer_id == wallet.customer_id
    assert ledger.balance(wallet) == Decimal("110")  # usable once paid

    page = acme.get(response.url).content.decode()
    assert invoice.invoice_number in by_testid(page, "purchase-notice")
    assert by_testid(page, "balance-pending") == "$50.00"

    listed = acme.get(reverse("portal:invoices")).content.decode()
    assert f"{invoice.invoice_number}</a> (credits)" in listed

    invoice_payment_update(invoice=invoice, payment_status="SUCCEEDED")
    assert ledger.balance(wallet) == Decimal("160")


def test_submitting_the_same_buy_form_twice_buys_once(acme, wallet):
    first, second = buy(acme, key="b" * 32), buy(acme, key="b" * 32)
    assert first.status_code == second.status_code == 302 and first.url == second.url
    assert len(purchases()) == 1
    assert Invoice.objects.filter(invoice_type="CREDIT").count() == 1
    buy(acme, key="c" * 32)  # a new form is a new purchase
    assert len(purchases()) == 2


def test_the_same_key_for_another_amount_is_refused(acme, wallet):
    buy(acme, credits="50", key="d" * 32)
    response = buy(acme, credits="60", key="d" * 32)
    assert response.status_code == 400
    assert "was used for a different transaction" in response.content.decode()
    assert len(purchases()) == 1


def test_buying_needs_the_csrf_token(demo, wallet):
    strict = Client(enforce_csrf_checks=True)
    strict.login(username="acme@example.com", password="acme-demo")
    assert buy(strict).status_code == 403
    assert purchases() == []


def test_credits_go_to_the_signed_in_customers_own_wallet_only(client, demo, wallet):
    client.login(username="globex@example.com", password="globex-demo")
    response = buy(client, credits="20", wallet=wallet.pk, customer=wallet.customer_id)
    assert response.status_code == 302
    (block,) = purchases()
    globex = Customer.objects.get(external_id="globex")
    assert block.wallet.customer == globex and block.invoice.customer == globex
    assert (block.wallet.wallet_type, block.wallet.currency) == ("PRE_PAID", "usd")
    assert ledger.balance(wallet) == Decimal("110")
    acme = Client()
    acme.login(username="acme@example.com", password="acme-demo")
    page = acme.get(reverse("portal:credits"), {"purchase": block.pk}).content.decode()
    assert 'data-testid="purchase-notice"' not in page
    assert acme.get(reverse("portal:invoice", args=[block.invoice_id])).status_code == 404


def test_staff_viewing_as_the_customer_cannot_buy(admin_client, wallet):
    admin_client.post(reverse("portal:view-as", args=[wallet.customer_id]))
    assert admin_client.get(reverse("portal:credits")).status_code == 200
    assert "Buy credits" not in admin_client.get(reverse("portal:credits")).content.decode()
    assert buy(admin_client).status_code == 403
    assert purchases() == []


@pytest.mark.parametrize(
    ("credits", "error"),
    [
        ("0", "greater than or equal to 0.01"),
        ("-5", "greater than or equal to 0.01"),
        ("many", "Enter a number."),
        ("10.001", "not a whole amount to invoice"),
        ("1000000.01", "less than or equal to 1000000"),
        ("", "This field is required."),
    ],
)
def test_a_bad_amount_is_a_400_that_says_why_and_buys_nothing(acme, wallet, credits, error):
    response = buy(acme, credits=credits)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert purchases() == [] and Invoice.objects.filter(invoice_type="CREDIT").count() == 0


def test_a_missing_or_forged_key_is_a_400(acme, wallet):
    assert buy(acme, key="").status_code == 400
    assert buy(acme, key="x" * 32).status_code == 400
    assert purchases() == []


def test_a_customer_without_a_wallet_gets_a_pre_paid_one_with_the_purchase(client, demo):
    client.login(username="globex@example.com", password="globex-demo")
    assert buy(client, credits="5").status_code == 302
    (wallet,) = Wallet.objects.filter(customer__external_id="globex")
    assert (wallet.wallet_type, wallet.currency, wallet.wallet_status) == (
        "PRE_PAID",
        "usd",
        "active",
    )
    assert buy(client, credits="5", key="e" * 32).status_code == 302
    assert Wallet.objects.filter(customer__external_id="globex").count() == 1


def test_a_frozen_wallet_is_not_bought_into(acme, wallet):
    wallet.wallet_status = Wallet.Status.FROZEN
    wallet.save()
    response = buy(acme)
    assert response.status_code == 400
    assert "only an active one is topped up" in response.content.decode()
    assert purchases() == []


def test_the_live_panel_reloads_the_card_when_the_ledger_changes(acme, wallet, demo):
    home = acme.get(reverse("portal:home")).content.decode()
    url = re.search(r'hx-get="([^"]+)"', home).group(1).replace("&amp;", "&")
    assert acme.get(url).status_code == 204  # nothing changed

    block = wallet_top_up(
        wallet=wallet, reason=Reason.PURCHASED_CREDIT_INVOICED, credits=Decimal(50)
    )
    pending = acme.get(url)
    assert pending.status_code == 200
    assert by_testid(pending.content.decode(), "balance-pending") == "$50.00"

    url = re.search(r'hx-get="([^"]+)"', pending.content.decode()).group(1).replace("&amp;", "&")
    assert acme.get(url).status_code == 204
    invoice_payment_update(invoice=block.invoice, payment_status="SUCCEEDED")
    paid = acme.get(url)
    assert paid.status_code == 200
    assert by_testid(paid.content.decode(), "balance-ledger") == "$160.00"


def test_the_purchase_notice_is_only_for_a_purchase_with_its_invoice(acme, wallet):
    from billing.wallets import wallet_debit, wallet_top_up

    entries = [
        wallet_debit(wallet=wallet, credits=Decimal(1), description="correction"),
        wallet_top_up(wallet=wallet, reason="FREE_CREDIT_GRANT", credits=Decimal(1)),
    ]
    for entry in entries:
        page = acme.get(reverse("portal:credits"), {"purchase": entry.pk})
        assert page.status_code == 200 and page.context["bought"] is None
        assert "/portal/invoices/None/" not in page.content.decode()
