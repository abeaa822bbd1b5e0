from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self):
        from metering.signals import usage_recorded

        usage_recorded.connect(_usage_recorded, dispatch_uid="billing.usage_recorded")


def _usage_recorded(sender, external_customer_ids, **kwargs):
    from billing.services import invoices_refresh_request

    invoices_refresh_request(external_customer_ids=external_customer_ids)
