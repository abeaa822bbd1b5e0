"""The names Tally's rules are spelled in, in one place: aggregations and billing models.

Plain constants with no Django, so the pure engines (``catalog.pricing``,
``metering.aggregation``) and the models' choices (``Meter.Aggregation``,
``Price.BillingModel``) share them; no rule spells ``"SUM"`` or ``"PACKAGE"`` by hand.
"""

# Aggregations (``Meter.aggregation``).
COUNT = "COUNT"
SUM = "SUM"
AVG = "AVG"
MAX = "MAX"
COUNT_UNIQUE = "COUNT_UNIQUE"
LATEST = "LATEST"
SUM_WITH_MULTIPLIER = "SUM_WITH_MULTIPLIER"
WEIGHTED_SUM = "WEIGHTED_SUM"

# Aggregations that read a numeric field.
NUMERIC_AGGREGATIONS = frozenset({SUM, AVG, MAX, LATEST, SUM_WITH_MULTIPLIER, WEIGHTED_SUM})
# Aggregations whose quantity over two sets of events is the sum of their quantities.
ADDITIVE_AGGREGATIONS = frozenset({COUNT, SUM, SUM_WITH_MULTIPLIER, WEIGHTED_SUM})
# Aggregations whose hourly rollups cannot be summed per window: they need the hours.
HOURLY_ONLY_AGGREGATIONS = frozenset({LATEST, COUNT_UNIQUE})

# Price types (``Price.type``) and when they are invoiced (``Price.invoice_cadence``).
USAGE = "USAGE"
FIXED = "FIXED"
ARREAR = "ARREAR"
ADVANCE = "ADVANCE"

# Billing models (``Price.billing_model``).
FLAT_FEE = "FLAT_FEE"
PACKAGE = "PACKAGE"
TIERED = "TIERED"

# Package rounding (``Price.round``).
ROUND_UP = "up"
ROUND_DOWN = "down"
ROUND_NONE = "none"

# Tier modes (``Price.tier_mode``).
VOLUME = "VOLUME"
SLAB = "SLAB"
