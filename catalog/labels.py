"""How catalog objects read to people. Pure wording, no ORM: models and admin share it."""

from decimal import Decimal

from catalog import pricing
from catalog.money import format_quantity, format_unit_price


def filters_text(filters) -> str:
    """``model=OpenAI O1, prompt_type=input``; several values on one key read ``a or b``."""
    return ", ".join(f"{f['key']}={' or '.join(f['values'])}" for f in filters or ())


def meter_text(*, lead: str, aggregation: str, field: str, filters) -> str:
    """``Input Tokens · SUM(tokens) where model=OpenAI O1, prompt_type=input``."""
    what = f"{aggregation}({field})" if field else aggregation
    where = filters_text(filters)
    return " · ".join(part for part in (lead, what) if part) + (f" where {where}" if where else "")


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
