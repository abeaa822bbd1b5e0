from django.db import transaction
from django.dispatch import Signal

# Sent after a commit that changed a customer's credits or wallet settings, with
# ``customer_id``: its drafts show the credits they would take now, and their recompute
# re-checks its wallets (alert state, auto top-up).
wallet_changed = Signal()


def wallet_changed_on_commit(customer_id: str) -> None:
    transaction.on_commit(lambda: wallet_changed.send(sender=None, customer_id=customer_id))


# Sent after the commit that wrote an email to the outbox, with ``email_id``: a worker sends it.
email_queued = Signal()
