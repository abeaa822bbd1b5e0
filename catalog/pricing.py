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
        return sum((use.amount for use in tier_uses(terms, quantity)), ZERO)
    raise ValueError(f"unknown billing model {terms.billing_model!r}")


def packages_for(terms: Terms, quantity: Decimal) -> Decimal:
    """How many packages ``quantity`` makes after free units; fractional when round is none."""
    packages = exact_packages(terms, quantity)
    if terms.round == ROUND_NONE:
        return packages
    return packages.to_integral_value(ROUND_CEILING if terms.round == ROUND_UP else ROUND_FLOOR)


def exact_packages(terms: Terms, quantity: Decimal) -> Decimal:
    """Packages before rounding: what ``packages_for`` rounds."""
    return billable_units(terms, quantity) / Decimal(terms.divide_by or 1)


def billable_units(terms: Terms, quantity: Decimal) -> Decimal:
    """``quantity`` less the free units, never below zero."""
    return max(quantity - terms.free_units, ZERO)


def _package(terms: Terms, quantity: Decimal) -> Decimal:
    if terms.round == ROUND_NONE:
        # Multiply before dividing so that exact pro-rata amounts stay exact.
        return terms.amount * billable_units(terms, quantity) / Decimal(terms.divide_by or 1)
    return packages_for(terms, quantity) * terms.amount


@dataclass(frozen=True)
class TierUse:
    """``units`` priced at ``tier``: its share of a TIERED charge."""

    number: int  # 1-based position of the tier
    tier: Tier
    units: Decimal

    @property
    def amount(self) -> Decimal:
        return self.units * self.tier.unit_amount + self.tier.flat_amount


def tier_uses(terms: Terms, quantity: Decimal) -> list[TierUse]:
    """The tiers ``quantity`` touches, each with the units it prices (quantity > 0).

    VOLUME: the one tier the whole quantity lands in. SLAB: each tier filled in order."""
    tiers = terms.tiers
    if terms.tier_mode != SLAB:
        for number, tier in enumerate(tiers, start=1):
            if tier.up_to is None or quantity <= tier.up_to:
                return [TierUse(number, tier, quantity)]
        return [TierUse(len(tiers), tiers[-1], quantity)]  # beyond a closed last tier: stays
    uses = []
    floor = ZERO
    for number, tier in enumerate(tiers, start=1):
        is_last = number == len(tiers)
        ceiling = quantity if tier.up_to is None or is_last else min(quantity, tier.up_to)
        if ceiling <= floor:
            break
        uses.append(TierUse(number, tier, ceiling - floor))
        floor = ceiling
    return uses


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
