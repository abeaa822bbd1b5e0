from django.apps import AppConfig


class MeteringConfig(AppConfig):
    name = "metering"

    def ready(self):
        from celery.signals import worker_ready
        from django.db import connections
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_delete, post_save

        from catalog.models import Feature, Meter
        from metering.auth import api_keys_forget
        from metering.ingestion import meters_forget
        from metering.models import ApiKey
        from metering.storage.portable import sqlite_functions_register

        for model, forget in ((Meter, meters_forget), (Feature, meters_forget)):
            post_save.connect(forget, sender=model, dispatch_uid=f"forget-{model.__name__}")
            post_delete.connect(forget, sender=model, dispatch_uid=f"forget-d-{model.__name__}")
        post_save.connect(api_keys_forget, sender=ApiKey, dispatch_uid="forget-keys")
        post_delete.connect(api_keys_forget, sender=ApiKey, dispatch_uid="forget-d-keys")
        worker_ready.connect(_worker_ready, dispatch_uid="metering.worker_ready")

        connection_created.connect(sqlite_functions_register, dispatch_uid="property-text")
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None:  # opened before this app was ready
                sqlite_functions_register(connection=connection)


def _worker_ready(**kwargs):
    """A fold lost with a killed worker is still pending: queue it again now."""
    from metering.tasks import fold_requests

    fold_requests.sweep()
