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
    *, external_id: str, name: str, email: str = "", metadata: dict | None = None, **address: str
) -> Customer:
    """``address`` takes the ``address_*`` fields of the billing address."""
    customer = Customer(
        external_id=external_id, name=name, email=email, metadata=metadata or {}, **address
    )
    customer.full_clean()
    customer.save()
    return customer


@transaction.atomic
def portal_user_create(
    *, customer: Customer, email: str, password: str, check_password: bool = True
):
    """A Django user who signs in to the portal of ``customer`` with email and password.

    ``check_password=False`` is for demo data, whose passwords are published.
    """
    from django.contrib.auth import get_user_model
    from django.contrib.auth.password_validation import validate_password
    from django.core.exceptions import ValidationError
    from django.core.validators import validate_email

    from metering.models import CustomerUser

    User = get_user_model()
    email = email.strip().lower()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": "Enter a valid email address."}) from None
    if User.objects.filter(username=email).exists():
        raise ValidationError({"email": f"{email} already has an account."})
    user = User(username=email, email=email)
    try:
        if check_password:
            validate_password(password, user)
    except ValidationError as error:
        raise ValidationError({"password": error.messages}) from None
    user.set_password(password)
    user.save()
    CustomerUser.objects.create(user=user, customer=customer)
    return user
