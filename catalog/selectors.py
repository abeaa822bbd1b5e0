from decimal import Decimal

from catalog import pricing
from catalog.models import Price
from catalog.money import format_money, round_money


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
