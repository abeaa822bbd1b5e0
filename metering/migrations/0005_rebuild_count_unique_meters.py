"""COUNT_UNIQUE values are now compared as PostgreSQL prints numbers (1e-05 is 0.00001):
rebuild those meters' rollups, made under the old text, once beat sees them changed."""

from django.db import migrations
from django.utils import timezone


def touch(apps, schema_editor):
    Meter = apps.get_model("catalog", "Meter")
    Meter.objects.filter(aggregation="COUNT_UNIQUE").update(updated_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [("metering", "0004_unfolded_usage"), ("catalog", "0003_plan_version")]

    operations = [migrations.RunPython(touch, migrations.RunPython.noop)]
