from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"

    def ready(self):
        from celery.signals import worker_ready

        from billing.signals import email_queued, wallet_changed
        from metering.signals import usage_recorded

        usage_recorded.connect(_usage_recorded, dispatch_uid="billing.usage_recorded")
        wallet_changed.connect(_wallet_changed, dispatch_uid="billing.wallet_changed")
        email_queued.connect(_email_queued, dispatch_uid="billing.email_queued")
        worker_ready.connect(_worker_ready, dispatch_uid="billing.worker_ready")


def _worker_ready(**kwargs):
    """A recompute lost with a killed worker is still pending: queue it again now."""
    from billing.tasks import recompute_requests

    recompute_requests.sweep()


def _usage_recorded(sender, external_customer_ids, **kwargs):
    from billing.tasks import invoices_refresh_request

    invoices_refresh_request(external_customer_ids=external_customer_ids)


def _wallet_changed(sender, customer_id, **kwargs):
    from billing.tasks import invoices_refresh_request
    from metering.models import Customer

    external_ids = Customer.objects.filter(pk=customer_id).values_list("external_id", flat=True)
    invoices_refresh_request(external_customer_ids=list(external_ids))


def _email_queued(sender, email_id, **kwargs):
    from billing.tasks import email_send

    email_send.delay(email_id)
