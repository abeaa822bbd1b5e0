"""The pricing engine: a quantity and a price's terms in, an exact Decimal amount out.

Pure arithmetic, no ORM. Amounts are left unrounded; an invoice line is rounded once with
``catalog.money.round_money``.
"""

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from catalog.names import (
    FLAT_FEE,
    PACKAGE,
    ROUND_DOWN,
    ROUND_NONE,
    ROUND_UP,
    SLAB,
    TIERED,
    VOLUME,
)

__all__ = [
    "FLAT_FEE",
    "PACKAGE",
    "ROUND_DOWN",
    "ROUND_NONE",
    "ROUND_UP",
    "SLAB",
    "TIERED",
    "VOLUME",
]

ZERO = Decimal(0)


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # inclusive; None is the open last tier
    unit_amount: Decimal
    flat_amount: Decimal = ZERO


@dataclass(frozen=True)
class Terms:
    billing_model: str
    amount: Decimal = ZERO
    divide_by: int | None = None
    round: str = ROUND_UP
    free_units: Decimal = ZERO
    tier_mode: str = VOLUME
    tiers: tuple[Tier, ...] = ()


def amount_for(terms: Terms, quantity: Decimal) -> Decimal:
    """The unrounded charge for ``quantity`` units under ``terms``. Zero usage costs 0."""
    if quantity <= 0:
        return ZERO
    if terms.billing_model == FLAT_FEE:
        return terms.amount * quantity
    if terms.billing_model == PACKAGE:
        return _package(terms, quantity)
    if terms.billing_model == TIERED:
        if terms.tier_mode == SLAB:
            return _slab(terms.tiers, quantity)
        return _volume(terms.tiers, quantity)
    raise ValueError(f"unknown billing model {terms.billing_model!r}")


def packages_for(terms: Terms, quantity: Decimal) -> Decimal:
    """How many packages ``quantity`` makes after free units; fractional when round is none."""
    billable = max(quantity - terms.free_units, ZERO)
    packages = billable / Decimal(terms.divide_by or 1)
    if terms.round == ROUND_NONE:
        return packages
    return packages.to_integral_value(ROUND_CEILING if terms.round == ROUND_UP else ROUND_FLOOR)


def _package(terms: Terms, quantity: Decimal) -> Decimal:
    if terms.round == ROUND_NONE:
        # Multiply before dividing so that exact pro-rata amounts stay exact.
        billable = max(quantity - terms.free_units, ZERO)
        return terms.amount * billable / Decimal(terms.divide_by or 1)
    return packages_for(terms, quantity) * terms.amount


def _volume(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    for tier in tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return quantity * tier.unit_amount + tier.flat_amount
    last = tiers[-1]  # quantity beyond a closed last tier stays in it
    return quantity * last.unit_amount + last.flat_amount


def _slab(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    total = ZERO
    floor = ZERO
    for index, tier in enumerate(tiers):
        is_last = index == len(tiers) - 1
        ceiling = quantity if tier.up_to is None or is_last else min(quantity, tier.up_to)
        if ceiling <= floor:
            break
        total += (ceiling - floor) * tier.unit_amount + tier.flat_amount
        floor = ceiling
    return total


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _number(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def terms_to_json(terms: Terms) -> dict:
    """``terms`` as JSON, amounts as exact decimal strings: what an invoice line keeps."""
    return {
        "billing_model": terms.billing_model,
        "amount": str(terms.amount),
        "divide_by": terms.divide_by,
        "round": terms.round,
        "free_units": str(terms.free_units),
        "tier_mode": terms.tier_mode,
        "tiers": [
            {
                "up_to": _text(t.up_to),
                "unit_amount": str(t.unit_amount),
                "flat_amount": str(t.flat_amount),
            }
            for t in terms.tiers
        ],
    }


def terms_from_json(data: dict) -> Terms:
    return Terms(
        billing_model=data["billing_model"],
        amount=Decimal(data["amount"]),
        divide_by=data["divide_by"],
        round=data["round"],
        free_units=Decimal(data["free_units"]),
        tier_mode=data["tier_mode"],
        tiers=tuple(
            Tier(
                up_to=_number(t["up_to"]),
                unit_amount=Decimal(t["unit_amount"]),
                flat_amount=Decimal(t["flat_amount"]),
            )
            for t in data["tiers"]
        ),
    )
