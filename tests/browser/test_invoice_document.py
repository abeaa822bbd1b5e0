"""The invoice document in Chromium: its PDF download, and the page on a phone."""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from billing.models import Invoice, Issuer
from billing.services import invoice_finalize
from metering.models import Customer
from tests.billing.test_invoice_document import ADDRESS, pdf_text
from tests.browser.test_portal import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DOCS = Path(__file__).resolve().parents[2] / "docs"
PHONE = {"width": 390, "height": 844}


@pytest.fixture
def finalized(o1_subscriptions) -> Invoice:
    Customer.objects.filter(external_id="acme").update(**ADDRESS)
    issuer = Issuer.get_solo()
    issuer.name = "Example AI Inc."
    issuer.address = "500 Howard St\nSan Francisco, CA 94105"
    issuer.email = "billing@example-ai.test"
    issuer.tax_id = "US 12-3456789"
    issuer.save()
    return invoice_finalize(invoice=Invoice.objects.get(subscription=o1_subscriptions["acme"]))


def open_invoice(page, live_server, invoice):
    sign_in(page, live_server, "acme@example.com", "acme-demo")
    page.get_by_role("link", name="Invoices").click()
    page.get_by_role("link", name=invoice.invoice_number).click()
    expect(page.get_by_test_id("invoice-total")).to_have_text("$202.50")


def test_the_customer_downloads_the_invoice_pdf(page, live_server, finalized, tmp_path):
    open_invoice(page, live_server, finalized)
    with page.expect_download() as info:
        page.get_by_role("link", name="Download PDF").click()
    download = info.value
    assert download.suggested_filename == f"{finalized.invoice_number}.pdf"
    content = Path(download.path()).read_bytes()
    text = pdf_text(content)
    assert finalized.invoice_number in text
    assert "$202.50" in text
    shot = (
        DOCS / "invoice-pdf.png" if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "pdf.png"
    )
    first_page_png(content, shot)
    assert shot.stat().st_size > 0


def first_page_png(content: bytes, path: Path) -> None:
    import pypdfium2

    document = pypdfium2.PdfDocument(content)
    try:
        document[0].render(scale=1.5).to_pil().save(path)
    finally:
        document.close()


def test_on_a_phone_total_and_amounts_stay_in_view(browser, live_server, finalized, tmp_path):
    context = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True)
    page = context.new_page()
    try:
        open_invoice(page, live_server, finalized)
        width = page.evaluate("document.documentElement.clientWidth")
        assert width == PHONE["width"]
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        amounts = page.locator("table.doc-lines td.line-amount")
        expect(amounts).to_have_count(finalized.line_items.count())
        for cell in [*amounts.all(), page.get_by_test_id("invoice-total")]:
            expect(cell).to_be_visible()
            cell.scroll_into_view_if_needed()
            box = cell.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, box
        expect(amounts.first).to_contain_text("$75.00")
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    finally:
        context.close()
