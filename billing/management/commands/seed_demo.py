from django.core.management.base import BaseCommand

from billing.demo import (
    demo_catalog_load,
    demo_customers_load,
    demo_issuer_load,
    demo_password,
    scenario_load,
)
from billing.models import Invoice


class Command(BaseCommand):
    help = "Load the OpenAI o1 demo. Safe to run again."

    def handle(self, *args, **options):
        scenario = scenario_load()
        plan = demo_catalog_load(scenario=scenario)
        demo_issuer_load()
        self.stdout.write(f"Demo plan {plan.name!r} has {plan.prices.count()} prices.")
        for subscription in demo_customers_load(scenario=scenario, plan=plan):
            draft = Invoice.objects.get(
                subscription=subscription, period_start=subscription.current_period_start
            )
            customer = subscription.customer
            credits = draft.total_prepaid_credits_applied
            less = f" less {credits:.2f} of prepaid credits" if credits else ""
            self.stdout.write(
                f"{customer.name}: proposed invoice {draft.subtotal:.2f}{less}, "
                f"{draft.total:.2f} {draft.currency.upper()} due; "
                f"portal login {customer.external_id}@example.com / {demo_password(customer)}"
            )
