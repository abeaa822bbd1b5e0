import secrets

from django.db import transaction
from django.utils import timezone

from metering.models import ApiKey, Customer


def api_key_secret_set(*, key: ApiKey) -> str:
    """Give an unsaved key a fresh secret; the secret is returned, never stored."""
    raw = f"tly_{secrets.token_urlsafe(32)}"
    key.prefix = raw[: ApiKey.PREFIX_LENGTH]
    key.hashed_key = ApiKey.hash(raw)
    return raw


def api_key_create(*, name: str) -> tuple[ApiKey, str]:
    key = ApiKey(name=name)
    raw = api_key_secret_set(key=key)
    key.save()
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


@transaction.atomic
def customer_create(
    *, external_id: str, name: str, email: str = "", metadata: dict | None = None
) -> Customer:
    customer = Customer(external_id=external_id, name=name, email=email, metadata=metadata or {})
    customer.full_clean()
    customer.save()
    return customer
