"""An early close splits a billing cycle in parts (``subscription_period_close_early``).

SQLite adds these columns by rebuilding the tables, which its closed-invoice triggers
(0004) would refuse mid-rebuild: they are dropped first and put back after."""

from decimal import Decimal
from importlib import import_module

from django.db import migrations, models

frozen = import_module("billing.migrations.0004_closed_invoices_frozen")
SQLITE_TRIGGERS = {"sqlite": frozen.SQLITE}
SQLITE_NO_TRIGGERS = {"sqlite": frozen.SQLITE_REVERSE}


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0005_issuer_invoice_due_date"),
    ]

    operations = [
        migrations.RunPython(frozen._run(SQLITE_NO_TRIGGERS), frozen._run(SQLITE_TRIGGERS)),
        migrations.AddField(
            model_name="invoice",
            name="closed_early",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.AddField(
            model_name="invoice",
            name="cycle_start",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="invoicelineitem",
            name="billed_before",
            field=models.DecimalField(decimal_places=12, default=Decimal("0"), max_digits=28),
        ),
        migrations.RunPython(frozen._run(SQLITE_TRIGGERS), frozen._run(SQLITE_NO_TRIGGERS)),
    ]
