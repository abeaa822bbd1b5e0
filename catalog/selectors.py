from decimal import Decimal

from catalog import pricing
from catalog.labels import terms_summary
from catalog.models import Plan, Price
from catalog.money import format_money, format_quantity, format_unit_price, round_money


def example_quantity(terms: pricing.Terms) -> Decimal:
    """A quantity that shows off a price: 3.7 packages (so rounding shows), or the open tier."""
    if terms.billing_model == pricing.PACKAGE:
        return terms.free_units + Decimal("3.7") * Decimal(terms.divide_by or 1)
    closed = [t.up_to for t in terms.tiers if t.up_to is not None]
    if terms.billing_model == pricing.TIERED and closed:
        return closed[-1] * 2
    return Decimal(1000)


def _count(quantity: Decimal, singular: str, plural: str) -> str:
    return f"{format_quantity(quantity)} {singular if quantity == 1 else plural}"


def _total(amount: Decimal, currency: str) -> str:
    """The charge as the invoice line shows it; an unrounded amount says it is rounded."""
    rounded = round_money(amount, currency)
    if rounded == amount:
        return format_money(rounded, currency)
    exact = format_unit_price(amount, currency)
    return f"{exact}, {format_money(rounded, currency)} on the invoice"


def _package_example(terms: pricing.Terms, quantity: Decimal, currency: str, units: str) -> str:
    free = terms.free_units
    billable = pricing.billable_units(terms, quantity)
    total = _total(pricing.amount_for(terms, quantity), currency)
    if free and not billable:
        return f"{units}, all within the {format_quantity(free)} free → {total}"
    lead = units
    if free:
        lead = f"{units} − {format_quantity(free)} free = {format_quantity(billable)}"
    exact = pricing.exact_packages(terms, quantity)
    packages = pricing.packages_for(terms, quantity)
    size = f"packages of {format_quantity(Decimal(terms.divide_by or 1))}"
    charged = (
        f"{_count(packages, 'package', 'packages')} × "
        f"{format_unit_price(terms.amount, currency)} = {total}"
    )
    if terms.round == pricing.ROUND_NONE:
        return f"{lead} → {charged} (pro rata: {size}, not rounded)"
    if packages == exact:
        return f"{lead} → {charged} ({size})"
    return f"{lead} → {charged}, rounded {terms.round} from {format_quantity(exact)} {size}"


def _tier_range(terms: pricing.Terms, number: int) -> str:
    tier = terms.tiers[number - 1]
    low = terms.tiers[number - 2].up_to if number > 1 else None
    if tier.up_to is None:
        return f"above {format_quantity(low)}" if low is not None else "every unit"
    if low is None:
        return f"up to {format_quantity(tier.up_to)}"
    return f"above {format_quantity(low)} up to {format_quantity(tier.up_to)}"


def _tier_part(use: pricing.TierUse, currency: str) -> str:
    part = f"{format_quantity(use.units)} × {format_unit_price(use.tier.unit_amount, currency)}"
    if use.tier.flat_amount:
        part += f" + {format_unit_price(use.tier.flat_amount, currency)} flat"
    return part


def _tiered_example(terms: pricing.Terms, quantity: Decimal, currency: str, units: str) -> str:
    uses = pricing.tier_uses(terms, quantity)
    total = _total(pricing.amount_for(terms, quantity), currency)
    if terms.tier_mode == pricing.SLAB:
        parts = " + ".join(f"{_tier_part(u, currency)} (tier {u.number})" for u in uses)
        return f"{units} → {parts} = {total}"
    [use] = uses
    where = f"all in tier {use.number}, {_tier_range(terms, use.number)}"
    return f"{units} → {_tier_part(use, currency)} ({where}) = {total}"


def terms_example(
    terms: pricing.Terms,
    *,
    currency: str,
    quantity: Decimal | None = None,
    fixed: bool = False,
    unit_singular: str = "",
    unit_plural: str = "",
) -> str:
    """A worked example that spells out the arithmetic, priced by the invoice's own engine:
    ``3,700,000 tokens → 4 packages × $3.00 = $12.00, rounded up from 3.7 packages of …``."""
    if fixed:
        return f"{_total(pricing.amount_for(terms, Decimal(1)), currency)} each billing period"
    quantity = example_quantity(terms) if quantity is None else quantity
    units = _count(quantity, unit_singular or "unit", unit_plural or "units")
    if quantity <= 0:
        return f"{units} → {format_money(Decimal(0), currency)} (no usage, no charge)"
    if terms.billing_model == pricing.PACKAGE:
        return _package_example(terms, quantity, currency, units)
    if terms.billing_model == pricing.TIERED:
        return _tiered_example(terms, quantity, currency, units)
    total = _total(pricing.amount_for(terms, quantity), currency)
    return f"{units} × {format_unit_price(terms.amount, currency)} = {total}"


def price_example(price: Price, *, quantity: Decimal | None = None) -> str:
    """``terms_example`` for a saved price."""
    feature = price.meter.feature if price.meter_id else None
    return terms_example(
        price.terms(),
        currency=price.currency,
        quantity=quantity,
        fixed=price.type == Price.Type.FIXED,
        unit_singular=feature.unit_singular if feature else "",
        unit_plural=feature.unit_plural if feature else "",
    )


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
