from datetime import timedelta
from decimal import Decimal

import factory
from django.utils import timezone

from catalog.models import Feature, Meter, Plan, Price, PriceTier


class FeatureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Feature

    name = factory.Sequence(lambda n: f"Feature {n}")
    lookup_key = factory.Sequence(lambda n: f"feature-{n}")
    unit_singular = "token"
    unit_plural = "tokens"


class MeterFactory(factory.django.DjangoModelFactory):
    """A meter whose rollups are built, as the beat task leaves it. ``rollups=False`` skips."""

    class Meta:
        model = Meter
        skip_postgeneration_save = True

    feature = factory.SubFactory(FeatureFactory)
    event_name = "tokens"
    aggregation = Meter.Aggregation.SUM
    field = "tokens"
    filters = factory.LazyFunction(list)

    @factory.post_generation
    def rollups(obj, create, extracted, **kwargs):
        if create and extracted is not False:
            from metering.rollups import meter_rollups_rebuild

            meter_rollups_rebuild(meter=obj)


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan

    name = factory.Sequence(lambda n: f"Plan {n}")
    lookup_key = factory.Sequence(lambda n: f"plan-{n}")


class PriceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Price

    plan = factory.SubFactory(PlanFactory)
    meter = factory.SubFactory(MeterFactory)
    type = Price.Type.USAGE
    billing_model = Price.BillingModel.PACKAGE
    amount = Decimal("15")
    divide_by = 1_000_000


class PriceTierFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PriceTier

    price = factory.SubFactory(
        PriceFactory, billing_model=Price.BillingModel.TIERED, divide_by=None
    )
    up_to = None
    unit_amount = Decimal("1")


def ingest(*raws: dict, now=None, fold=True):
    """Parse and store events as the API would; raises EventRejected on the first bad one.
    Then fold them into the rollups, as the worker would, unless ``fold`` is off."""
    from django.utils import timezone

    from metering.ingestion import event_parse, events_ingest, meters_by_event_name
    from metering.rollups import rollups_fold

    meters = meters_by_event_name()
    now = now or timezone.now()
    result = events_ingest(events=[event_parse(r, meters=meters, now=now) for r in raws])
    if fold:
        rollups_fold()
    return result


def subscribe(plan: Plan):
    """A customer subscribed to ``plan``: its draft invoice bills every price, so all are in use."""
    from billing.services import subscription_create
    from metering.models import Customer

    customer = Customer.objects.create(
        external_id=f"cust-{Customer.objects.count() + 1}", name="Subscriber"
    )
    return subscription_create(customer=customer, plan=plan)


# Who uses it, and what is owed. Factories that go through a service do so because the
# service is what makes the object whole (a subscription's draft, a key's secret).


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "metering.Customer"
        django_get_or_create = ("external_id",)

    external_id = factory.Sequence(lambda n: f"customer-{n}")
    name = factory.LazyAttribute(lambda c: c.external_id.title())
    email = factory.LazyAttribute(lambda c: f"{c.external_id}@example.com")


class CustomerUserFactory(factory.django.DjangoModelFactory):
    """A portal sign-in, by default ``<external_id>@example.com`` / ``<external_id>-demo``."""

    class Meta:
        model = "metering.CustomerUser"

    customer = factory.SubFactory(CustomerFactory)
    password = factory.LazyAttribute(lambda u: f"{u.customer.external_id}-demo")

    @classmethod
    def _create(cls, model_class, *, customer, password, **kwargs):
        from metering.services import portal_user_create

        user = portal_user_create(
            customer=customer,
            email=customer.email or f"{customer.external_id}@example.com",
            password=password,
            check_password=False,
        )
        return user.portal_account


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """An API key; its secret is on ``.raw``."""

    class Meta:
        model = "metering.ApiKey"

    name = factory.Sequence(lambda n: f"key-{n}")

    @classmethod
    def _create(cls, model_class, *, name, **kwargs):
        from metering.services import api_key_create

        key, raw = api_key_create(name=name)
        key.raw = raw
        return key


class SubscriptionFactory(factory.django.DjangoModelFactory):
    """A subscription made by ``subscription_create``, so it has its draft."""

    class Meta:
        model = "billing.Subscription"

    customer = factory.SubFactory(CustomerFactory)
    plan = factory.SubFactory(PlanFactory)

    @classmethod
    def _create(cls, model_class, **kwargs):
        from billing.services import subscription_create

        return subscription_create(**kwargs)


class InvoiceFactory(factory.django.DjangoModelFactory):
    """A bare DRAFT invoice; subscriptions' own come from SubscriptionFactory."""

    class Meta:
        model = "billing.Invoice"

    customer = factory.SubFactory(CustomerFactory)
    currency = "usd"
    period_start = factory.LazyFunction(timezone.now)
    period_end = factory.LazyAttribute(lambda i: i.period_start + timedelta(days=30))


class InvoiceLineItemFactory(factory.django.DjangoModelFactory):
    """A fixed-fee line of a draft."""

    class Meta:
        model = "billing.InvoiceLineItem"

    invoice = factory.SubFactory(InvoiceFactory)
    price_type = "FIXED"
    display_name = "Fixed fee"
    quantity = Decimal(1)
    amount = Decimal(10)
    currency = "usd"
    period_start = factory.SelfAttribute("invoice.period_start")
    period_end = factory.SelfAttribute("invoice.period_end")


class EventFactory(factory.DictFactory):
    """An event as the API takes it; ``EventFactory.create`` stores it through ingestion
    (so it feeds its meters exactly as a sent one would) and returns the stored Event."""

    event_id = factory.Sequence(lambda n: f"event-{n}")
    event_name = "tokens"
    external_customer_id = "acme"
    timestamp = factory.LazyFunction(lambda: (timezone.now() - timedelta(minutes=1)).isoformat())
    properties = factory.LazyFunction(lambda: {"tokens": 1})

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        from metering.models import Event

        ingest(dict(kwargs))
        return Event.objects.get(event_id=kwargs["event_id"])
