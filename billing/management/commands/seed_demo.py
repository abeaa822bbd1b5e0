from django.core.management.base import BaseCommand

from billing.demo import demo_catalog_load, scenario_load


class Command(BaseCommand):
    help = "Load the OpenAI o1 demo. Safe to run again."

    def handle(self, *args, **options):
        plan = demo_catalog_load(scenario=scenario_load())
        self.stdout.write(f"Demo plan {plan.name!r} has {plan.prices.count()} prices.")
