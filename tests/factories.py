from decimal import Decimal

import factory

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
