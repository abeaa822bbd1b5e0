import pytest
from django.db import transaction

from billing.models import EventType, OutboxEvent
from billing.outbox import event_emit
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_event_is_stored_with_the_change_that_committed():
    customer = CustomerFactory()
    with transaction.atomic():
        event = event_emit(
            event_type=EventType.WALLET_TOPPED_UP, data={"credits": "5"}, customer_id=customer.pk
        )
    stored = OutboxEvent.objects.get()
    assert (stored.pk, stored.event_type, stored.data) == (
        event.pk,
        "wallet.topped_up",
        {"credits": "5"},
    )
    assert stored.pk.startswith("evt_")


def test_an_event_leaves_with_a_change_rolled_back():
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        event_emit(event_type=EventType.INVOICE_VOIDED, data={})
        1 / 0  # noqa: B018
    assert not OutboxEvent.objects.exists()


def test_an_event_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError, match="inside the transaction"):
        event_emit(event_type=EventType.INVOICE_VOIDED, data={})
    assert not OutboxEvent.objects.exists()


def test_an_unknown_event_type_is_refused():
    with pytest.raises(ValueError), transaction.atomic():
        event_emit(event_type="invoice.eaten", data={})
