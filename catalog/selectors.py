from decimal import Decimal

from catalog import pricing
from catalog.models import Price
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


def price_summary(price: Price) -> str:
    """How a price reads to a customer: ``$15.00 per 1,000,000 tokens``."""
    unit = "units"
    if price.meter_id:
        unit = price.meter.feature.unit_plural or unit
    amount = format_unit_price(price.amount, price.currency)
    if price.billing_model == pricing.PACKAGE:
        return f"{amount} per {format_quantity(Decimal(price.divide_by))} {unit}"
    if price.billing_model == pricing.TIERED:
        return f"Tiered ({price.tier_mode.lower()})"
    if price.type == Price.Type.FIXED:
        return f"{amount} per period"
    singular = price.meter.feature.unit_singular if price.meter_id else ""
    return f"{amount} per {singular or 'unit'}"
