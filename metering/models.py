import hashlib
from datetime import UTC, datetime

from django.db import models
from django.utils import timezone
from django_countries.fields import CountryField

from catalog.ids import id_factory
from catalog.models import Meter


class Customer(models.Model):
    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("cust"), editable=False
    )
    external_id = models.CharField(
        max_length=255,
        unique=True,
        help_text=(
            "Your own id for this customer, e.g. the account id in your product. Your product "
            "sends it with every usage event (external_customer_id), so use the same one there. "
            "No two customers share one."
        ),
    )
    name = models.CharField(max_length=255)
    email = models.EmailField(blank=True)
    # The billing address, in Flexprice's names and lengths; invoices print it.
    address_line1 = models.CharField(max_length=255, blank=True)
    address_line2 = models.CharField(max_length=255, blank=True)
    address_city = models.CharField(max_length=100, blank=True)
    address_state = models.CharField(max_length=100, blank=True)
    address_postal_code = models.CharField(max_length=20, blank=True)
    address_country = CountryField(blank=True, help_text="ISO 3166-1 alpha-2, e.g. US.")
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.external_id})"


class ApiKey(models.Model):
    """A secret for the ``x-api-key`` header. Only its SHA-256 is stored; keys are random."""

    PREFIX_LENGTH = 12

    id = models.CharField(
        primary_key=True, max_length=40, default=id_factory("key"), editable=False
    )
    name = models.CharField(max_length=255)
    prefix = models.CharField(max_length=PREFIX_LENGTH, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw_key: str) -> str:
        return hashlib.sha256(raw_key.encode()).hexdigest()

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


# Python's datetimes reach from year 1 to 9999; an event stored outside them (before the
# bounds existed, e.g. 0001-01-01T00:00+14:00, year 0 in UTC) would fail every read.
READABLE_FROM = datetime(1, 1, 2, tzinfo=UTC)
READABLE_UNTIL = datetime(9999, 12, 31, tzinfo=UTC)


class EventManager(models.Manager):
    """Reads skip events whose timestamp Python cannot hold, so none can poison a read.

    New events lie within config.bounds, far inside; the skipped ones stay stored."""

    def get_queryset(self):
        return (
            super()
            .get_queryset()
            .filter(timestamp__gte=READABLE_FROM, timestamp__lt=READABLE_UNTIL)
        )


class Event(models.Model):
    """The append-only usage log. ``event_id`` is the idempotency key: first write wins."""

    id = models.BigAutoField(primary_key=True)
    event_id = models.CharField(max_length=255, unique=True)
    event_name = models.CharField(max_length=255)
    external_customer_id = models.CharField(max_length=255)
    timestamp = models.DateTimeField()
    ingested_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=255, blank=True)
    properties = models.JSONField(default=dict)

    objects = EventManager()

    class Meta:
        indexes = [
            models.Index(
                fields=["external_customer_id", "event_name", "timestamp"], name="event_usage_idx"
            ),
            models.Index(fields=["timestamp"], name="event_timestamp_idx"),
        ]

    def __str__(self):
        return f"{self.event_name} {self.event_id}"


class UnfoldedUsage(models.Model):
    """What one stored event feeds one meter, kept until a fold adds it to the rollups.

    Written in the event's own transaction from the values ingest already parsed, so a fold
    never re-reads events. Usage reads add these rows: exact however far folding lags.
    """

    event_id = models.BigIntegerField()  # the Event's id; orders arrivals for LATEST ties
    meter = models.ForeignKey(
        Meter, on_delete=models.CASCADE, db_constraint=False, db_index=False, related_name="+"
    )
    external_customer_id = models.CharField(max_length=255)
    timestamp = models.DateTimeField()
    value = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    # COUNT_UNIQUE's value; "" is a value, so null marks the other aggregations.
    unique_value = models.CharField(max_length=255, null=True)  # noqa: DJ001

    @property
    def fed(self):
        """The value as ``Partial.add`` takes it."""
        return self.value if self.unique_value is None else self.unique_value


class FoldState(models.Model):
    """One row. Folds and rebuilds lock it; ``version`` moves on each commit that changes
    which events the rollups hold, so a read spanning several queries can tell it saw one
    state."""

    version = models.BigIntegerField(default=0)


class UsageRollup(models.Model):
    """Hourly partial aggregates of one meter for one customer, folded from the event log.

    Every aggregation but COUNT_UNIQUE is rebuilt from these columns, so usage over a
    period reads a few hundred rows instead of every raw event.
    """

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="+")
    external_customer_id = models.CharField(max_length=255)
    bucket = models.DateTimeField()  # the start of the hour
    event_count = models.BigIntegerField(default=0)
    value_sum = models.DecimalField(max_digits=40, decimal_places=12, default=0)
    value_max = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    latest_at = models.DateTimeField(null=True)
    latest_value = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    # Σ value × epoch seconds, for WEIGHTED_SUM.
    value_time_sum = models.DecimalField(max_digits=60, decimal_places=18, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["meter", "external_customer_id", "bucket"], name="rollup_unique_bucket"
            )
        ]


class UsageDistinct(models.Model):
    """The distinct values a COUNT_UNIQUE meter saw, per customer and hour."""

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, related_name="+")
    external_customer_id = models.CharField(max_length=255)
    bucket = models.DateTimeField()
    value = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["meter", "external_customer_id", "bucket", "value"],
                name="distinct_unique_value",
            )
        ]


class MeterRollupState(models.Model):
    """When a meter's rollups were last rebuilt from the raw log.

    Rollups are trusted only when built after the meter's last change; until then usage
    is read from raw events.
    """

    meter = models.OneToOneField(
        Meter, on_delete=models.CASCADE, primary_key=True, related_name="rollup_state"
    )
    built_at = models.DateTimeField()


class CustomerUser(models.Model):
    """A person who signs in to the portal for one customer; a customer may have several."""

    user = models.OneToOneField(
        "auth.User", on_delete=models.CASCADE, related_name="portal_account"
    )
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="users")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = "portal user"

    def __str__(self):
        return f"{self.user.email} for {self.customer}"
