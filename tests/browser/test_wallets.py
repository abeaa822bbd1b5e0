"""Prepaid credits in Chromium: the operator tops up a wallet in the admin; the customer sees
the balance card and buys credits in the portal."""

from decimal import Decimal

import pytest
from playwright.sync_api import expect

from billing import ledger
from billing.models import Invoice, WalletTransaction
from billing.services import draft_recompute
from billing.wallets import invoice_payment_update, wallet_create, wallet_top_up
from tests.browser.test_admin_overview import sign_in_to_admin
from tests.browser.test_portal import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
Reason = WalletTransaction.Reason


@pytest.fixture
def wallet(o1_subscriptions):
    """acme's PRE_PAID wallet with 100 credits ($1 each) bought; its usage is $202.50."""
    wallet = wallet_create(
        customer=o1_subscriptions["acme"].customer, currency="usd", name="Acme credits"
    )
    wallet_top_up(wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, credits=Decimal(100))
    return wallet


def screenshot(page, name: str, tmp_path) -> None:
    """Kept with the test's files, for a person to look at when it fails."""
    page.screenshot(path=str(tmp_path / name), full_page=True)


def test_operator_tops_up_a_wallet_from_the_customer_page(
    page, live_server, wallet, django_user_model, tmp_path
):
    django_user_model.objects.create_superuser("operator", "ops@example.com", "operator-pw-1")
    sign_in_to_admin(page, live_server, "operator", "operator-pw-1")
    page.goto(f"{live_server.url}/admin/metering/customer/{wallet.customer_id}/change/")
    wallets = page.locator("#wallets-group")
    expect(wallets).to_contain_text("$100.00 (100 credits)")
    expect(wallets).to_contain_text("-$102.50 (-102.5 credits)")  # less $202.50 of usage

    wallets.get_by_role("link", name="View").click()
    expect(page.get_by_test_id("wallet-ledger")).to_contain_text("PURCHASED_CREDIT_DIRECT")
    page.get_by_role("link", name="Top up").click()
    page.get_by_label("Credits").fill("0")
    page.get_by_role("button", name="Top up").click()
    expect(page.locator(".errorlist")).to_contain_text("Top up by more than 0 credits.")
    assert ledger.balance(wallet) == Decimal(100)  # the refusal stored nothing

    page.get_by_label("Credits").fill("25")
    page.get_by_label("Reason").select_option("FREE_CREDIT_GRANT")
    page.get_by_label("Priority").fill("0")
    page.get_by_label("Expiry date").fill("2099-12-31T00:00")
    page.get_by_label("Description").fill("Launch promotion")
    screenshot(page, "admin-wallet-top-up.png", tmp_path)
    page.get_by_role("button", name="Top up").click()

    expect(page.locator(".messagelist")).to_contain_text("Added $25.00 (25 credits)")
    expect(page.get_by_test_id("wallet-ledger")).to_contain_text("Launch promotion")
    expect(page.locator(".field-ledger_balance")).to_contain_text("$125.00 (125 credits)")
    screenshot(page, "admin-wallet.png", tmp_path)
    block = WalletTransaction.objects.get(wallet=wallet, transaction_reason="FREE_CREDIT_GRANT")
    assert (block.credit_amount, block.priority, block.expiry_date.year) == (Decimal(25), 0, 2099)
    assert ledger.balance(wallet) == Decimal(125)


def test_customer_sees_the_balance_card_and_buys_credits(page, live_server, wallet, tmp_path):
    draft_recompute(invoice=Invoice.objects.get(customer=wallet.customer, invoice_status="DRAFT"))
    sign_in(page, live_server, "acme@example.com", "acme-demo")
    expect(page.get_by_test_id("proposed-total")).to_have_text("$102.50")
    expect(page.get_by_test_id("proposed-credits")).to_have_text(
        "$202.50 less $100.00 of prepaid credits"
    )
    expect(page.get_by_test_id("balance-ledger")).to_have_text("$100.00")
    expect(page.get_by_test_id("balance-usage")).to_have_text("$202.50")
    expect(page.get_by_test_id("balance-real-time")).to_have_text("-$102.50")
    screenshot(page, "portal-balance.png", tmp_path)

    page.get_by_role("link", name="Buy credits").click()
    expect(page.get_by_text("Payment collection comes in a later release")).to_be_visible()
    page.get_by_label("Credits").fill("10.001")
    page.get_by_role("button", name="Buy credits").click()
    expect(page.get_by_test_id("credits-error")).to_contain_text("not a whole amount")

    page.get_by_label("Credits").fill("150")
    page.get_by_role("button", name="Buy credits").click()
    notice = page.get_by_test_id("purchase-notice")
    expect(notice).to_contain_text("usable once it is marked paid")
    expect(page.get_by_test_id("balance-pending")).to_have_text("$150.00")
    expect(page.get_by_test_id("ledger")).to_contain_text("awaiting payment")
    page.go_back()  # the form again, with the same key: a second submit buys nothing more
    page.get_by_label("Credits").fill("150")
    page.get_by_role("button", name="Buy credits").click()
    expect(page.get_by_test_id("purchase-notice")).to_be_visible()
    (block,) = WalletTransaction.objects.filter(transaction_reason="PURCHASED_CREDIT_INVOICED")

    notice.get_by_role("link", name="See the invoice").click()
    expect(page.get_by_test_id("invoice-total")).to_have_text("$150.00")
    expect(page.get_by_test_id("amount-due")).to_have_text("$150.00")

    invoice_payment_update(invoice=block.invoice, payment_status="SUCCEEDED")
    page.goto(f"{live_server.url}/portal/credits/")
    expect(page.get_by_test_id("balance-ledger")).to_have_text("$250.00")
    expect(page.get_by_test_id("balance-real-time")).to_have_text("$47.50")
    screenshot(page, "portal-credits.png", tmp_path)
