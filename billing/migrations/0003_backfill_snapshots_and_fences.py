"""Lines and invoices written before snapshots and fences. Outside one transaction, so that
no table stays locked while it runs; each step is safe to run again."""

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.db import migrations, models

METER_FIELDS = ("event_name", "aggregation", "field", "multiplier", "filters", "reset_usage")


def _packages(price, quantity):
    billable = max(quantity - price.free_units, Decimal(0)) / Decimal(price.divide_by or 1)
    if price.round == "none":
        return billable
    return billable.to_integral_value(ROUND_CEILING if price.round == "up" else ROUND_FLOOR)


def _text(value):
    return None if value is None else str(value)


def snapshot_existing_lines(apps, schema_editor):
    """Take the terms their price has now: the best record left of what priced them."""
    Line = apps.get_model("billing", "InvoiceLineItem")
    lines = Line.objects.filter(terms={}).exclude(price=None)
    fields = [
        "terms",
        "invoice_cadence",
        "packages",
        "meter_definition",
        "unit_singular",
        "unit_plural",
    ]
    batch = []
    for line in lines.select_related("price", "meter__feature").iterator(chunk_size=500):
        price = line.price
        tiers = price.tiers.order_by(models.F("up_to").asc(nulls_last=True))
        line.terms = {
            "billing_model": price.billing_model,
            "amount": str(price.amount),
            "divide_by": price.divide_by,
            "round": price.round,
            "free_units": str(price.free_units),
            "tier_mode": price.tier_mode,
            "tiers": [
                {
                    "up_to": _text(t.up_to),
                    "unit_amount": str(t.unit_amount),
                    "flat_amount": str(t.flat_amount),
                }
                for t in tiers
            ],
        }
        line.invoice_cadence = price.invoice_cadence
        if price.billing_model == "PACKAGE":
            line.packages = _packages(price, line.quantity)
        if line.meter is not None:
            meter = line.meter
            line.meter_definition = {name: getattr(meter, name) for name in METER_FIELDS}
            line.meter_definition["multiplier"] = _text(meter.multiplier)
            line.unit_singular = meter.feature.unit_singular
            line.unit_plural = meter.feature.unit_plural
        batch.append(line)
        if len(batch) >= 500:
            Line.objects.bulk_update(batch, fields)
            batch = []
    Line.objects.bulk_update(batch, fields)


def fence_closed_invoices(apps, schema_editor):
    """The fence the old rule (late = ingested after finalization) implied: the last event
    stored by then. Ids follow ingest order closely, so it is found by bisecting ids with the
    primary key's index, a few dozen lookups an invoice, never a scan of the events."""
    Invoice = apps.get_model("billing", "Invoice")
    Event = apps.get_model("metering", "Event")
    highest = Event.objects.aggregate(models.Max("id"))["id__max"] or 0
    closed = Invoice.objects.filter(finalized_at__isnull=False, usage_fence__isnull=True)
    for invoice in closed.iterator():
        low, high = 0, highest  # the fence lies in [low, high]
        while low < high:
            middle = (low + high + 1) // 2
            first = Event.objects.filter(id__gte=middle).order_by("id").values("ingested_at")
            stamp = first.first()
            if stamp is not None and stamp["ingested_at"] <= invoice.finalized_at:
                low = middle
            else:
                high = middle - 1
        Invoice.objects.filter(pk=invoice.pk).update(usage_fence=low)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("billing", "0002_line_snapshots_and_fence")]

    operations = [
        migrations.RunPython(snapshot_existing_lines, migrations.RunPython.noop),
        migrations.RunPython(fence_closed_invoices, migrations.RunPython.noop),
    ]
