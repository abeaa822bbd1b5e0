"""Emails about alerts and budgets, through their own outbox: written in the transaction of
the change they report, sent after commit by a worker, with a beat sweep for any whose task
was lost. Delivery is at least once: a worker killed between sending and recording it sends
again."""

from datetime import datetime, timedelta

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from billing.models import OutboxEmail
from billing.signals import email_queued

SWEEP_AFTER = timedelta(seconds=30)  # an unsent email older than this lost its task


def email_queue(*, key: str, to: str, subject: str, body: str) -> OutboxEmail:
    """Write the email in the caller's transaction, once per ``key``; queue its sending
    for after the commit."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("email_queue must run inside the transaction of its change")
    email, created = OutboxEmail.objects.get_or_create(
        key=key, defaults={"to": to, "subject": subject[:255], "body": body}
    )
    if created:
        # Robust: a broker down must not fail the committed change; the sweep sends it later.
        transaction.on_commit(
            lambda: email_queued.send(sender=None, email_id=email.pk), robust=True
        )
    return email


def email_deliver(*, email_id: str) -> bool:
    """Send one email unless it was sent (or is being sent by another worker). Returns
    whether this call sent it."""
    with transaction.atomic():
        email = (
            OutboxEmail.objects.select_for_update(skip_locked=True)
            .filter(pk=email_id, sent_at__isnull=True)
            .first()
        )
        if email is None:
            return False
        failed = None
        try:
            send_mail(email.subject, email.body, None, [email.to])
        except Exception as error:  # recorded, then raised for the task's retry
            failed = error
        else:
            email.sent_at = timezone.now()
        email.attempts += 1
        email.last_error = "" if failed is None else str(failed)[:1000]
        email.save(update_fields=["sent_at", "attempts", "last_error"])
    if failed is not None:
        raise failed
    return True


def emails_unsent(*, now: datetime) -> list[str]:
    """Emails whose task should have run by now."""
    return list(
        OutboxEmail.objects.filter(sent_at__isnull=True, created_at__lte=now - SWEEP_AFTER)
        .order_by("created_at")
        .values_list("pk", flat=True)[:500]
    )
