"""The invoice as a document: one template for the portal page, the PDF and the staff's
copy. It shows only the invoice, its lines' snapshots, the customer and the issuer."""

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render
from django.template.loader import render_to_string
from django.utils.http import content_disposition_header

from billing.models import Invoice, Issuer, IssuerDetails
from billing.portal import selectors
from billing.portal.views import portal_view
from catalog import pricing
from metering.models import Customer

STYLESHEET = "portal/invoice.css"

_PAYMENT = {
    Invoice.PaymentStatus.PENDING: "Unpaid",
    Invoice.PaymentStatus.SUCCEEDED: "Paid",
    Invoice.PaymentStatus.FAILED: "Payment failed",
    Invoice.PaymentStatus.VOIDED: "Void",
}


@dataclass(frozen=True)
class DocumentLine:
    row: selectors.InvoiceRow
    unit_price: Decimal | None  # None when tiered: the line's price summary tells the tiers


@dataclass(frozen=True)
class InvoiceDocument:
    invoice: Invoice
    customer: Customer
    issuer: IssuerDetails
    bill_to: tuple[str, ...]  # the customer's address lines
    lines: tuple[DocumentLine, ...]
    title: str
    status: str
    filename: str


def invoice_document(invoice: Invoice) -> InvoiceDocument:
    customer = invoice.customer
    rows = selectors.invoice_rows(invoice)
    lines = tuple(
        DocumentLine(
            row=row,
            unit_price=None
            if item.priced_terms().billing_model == pricing.TIERED
            else row.unit_price,
        )
        for row, item in zip(rows, invoice.line_items.all(), strict=True)
    )
    if invoice.is_draft:
        title, status = "Proposed invoice", "Proposed, not final"
        filename = f"proposed-invoice-{invoice.period_start:%Y-%m-%d}.pdf"
    else:
        title = f"Invoice {invoice.invoice_number}" if invoice.invoice_number else "Invoice"
        status = _status(invoice)
        filename = f"{invoice.invoice_number or invoice.pk}.pdf"
    return InvoiceDocument(
        invoice=invoice,
        customer=customer,
        issuer=Issuer.get_solo().details(),
        bill_to=address_lines(customer),
        lines=lines,
        title=title,
        status=status,
        filename=filename,
    )


def _status(invoice: Invoice) -> str:
    if invoice.invoice_status == Invoice.Status.VOIDED:
        return "Void"
    if invoice.invoice_status == Invoice.Status.SKIPPED:
        return "Skipped: nothing to pay"
    return _PAYMENT.get(invoice.payment_status, invoice.get_payment_status_display())


def address_lines(customer: Customer) -> tuple[str, ...]:
    """``1 Market St``, ``San Francisco, CA 94105``, ``United States``: the lines given."""
    region = ", ".join(p for p in (customer.address_city, customer.address_state) if p)
    place = " ".join(p for p in (region, customer.address_postal_code) if p)
    country = customer.address_country.name if customer.address_country else ""
    lines = (customer.address_line1, customer.address_line2, place, country)
    return tuple(line for line in lines if line)


def invoice_pdf(document: InvoiceDocument) -> bytes:
    """The document drawn by WeasyPrint (imported here: it needs Pango, pages do not)."""
    from weasyprint import CSS, HTML

    html = render_to_string("billing/invoice_pdf.html", {"doc": document})
    stylesheet = CSS(filename=finders.find(STYLESHEET))
    return HTML(string=html).write_pdf(stylesheets=[stylesheet])


def pdf_response(invoice: Invoice) -> HttpResponse:
    document = invoice_document(invoice)
    return HttpResponse(
        invoice_pdf(document),
        content_type="application/pdf",
        headers={"Content-Disposition": content_disposition_header(True, document.filename)},
    )


def _customer_invoice(customer: Customer, invoice_id: str) -> Invoice:
    """The customer's own invoice, else 404: nothing crosses customers."""
    invoices = selectors.customer_invoices(customer).select_related("customer")
    return get_object_or_404(invoices.prefetch_related("line_items"), pk=invoice_id)


@portal_view
def invoice_detail(request, customer, invoice_id):
    document = invoice_document(_customer_invoice(customer, invoice_id))
    return render(request, "portal/invoice_detail.html", {"customer": customer, "doc": document})


@portal_view
def invoice_pdf_download(request, customer, invoice_id):
    return pdf_response(_customer_invoice(customer, invoice_id))
