from decimal import Decimal

from catalog import pricing
from catalog.models import Plan, Price
from catalog.money import format_money, format_quantity, format_unit_price, round_money


def example_quantity(terms: pricing.Terms) -> Decimal:
    """A quantity that shows off a price: five packages, or the start of the open tier."""
    if terms.billing_model == pricing.PACKAGE:
        return terms.free_units + 5 * Decimal(terms.divide_by or 1)
    closed = [t.up_to for t in terms.tiers if t.up_to is not None]
    if terms.billing_model == pricing.TIERED and closed:
        return closed[-1] * 2
    return Decimal(1000)


def price_example(price: Price) -> str:
    """A worked example such as ``5,000,000 tokens → $75.00``."""
    terms = price.terms()
    quantity = example_quantity(terms)
    unit = ""
    if price.meter_id:
        feature = price.meter.feature
        unit = feature.unit_singular if quantity == 1 else feature.unit_plural
    amount = round_money(pricing.amount_for(terms, quantity), price.currency)
    return f"{quantity.normalize():,f} {unit or 'units'} → {format_money(amount, price.currency)}"


def terms_summary(
    terms: pricing.Terms, *, currency: str, fixed: bool, unit_singular: str, unit_plural: str
) -> str:
    """How a price reads to a customer: ``$15.00 per 1,000,000 tokens``."""
    amount = format_unit_price(terms.amount, currency)
    if terms.billing_model == pricing.PACKAGE:
        per = format_quantity(Decimal(terms.divide_by or 1))
        return f"{amount} per {per} {unit_plural or 'units'}"
    if terms.billing_model == pricing.TIERED:
        return f"Tiered ({terms.tier_mode.lower()})"
    if fixed:
        return f"{amount} per period"
    return f"{amount} per {unit_singular or 'unit'}"


def price_summary(price: Price) -> str:
    feature = price.meter.feature if price.meter_id else None
    return terms_summary(
        price.terms(),
        currency=price.currency,
        fixed=price.type == Price.Type.FIXED,
        unit_singular=feature.unit_singular if feature else "",
        unit_plural=feature.unit_plural if feature else "",
    )


def price_in_use(*, price: Price) -> bool:
    """Billed on an invoice line. Every active subscription's draft has a line for each of
    its plan's prices, and finalized invoices keep theirs, so this covers both."""
    return not price._state.adding and price.invoice_lines.exists()


def plan_in_use(*, plan: Plan) -> bool:
    """Any of its prices is in use (see ``price_in_use``)."""
    return Price.objects.filter(plan=plan, invoice_lines__isnull=False).exists()
