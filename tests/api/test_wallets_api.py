"""/v1/wallets on Flexprice's wire: shapes the SDK's models parse, refusals that store
nothing, top-ups counted once, invoiced purchases usable once paid, the ledger's order."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from flexprice import models
from flexprice.utils.serializers import unmarshal_json

from billing import services, wallets
from billing.models import Invoice, Wallet, WalletTransaction
from tests.api.asserts import assert_error
from tests.factories import CustomerFactory, PriceFactory, SubscriptionFactory, ingest

pytestmark = pytest.mark.django_db

Reason = WalletTransaction.Reason
NEXT_YEAR = timezone.now().year + 1


def sdk(response, model):
    """The body as the SDK reads it: a 200 its model parses."""
    assert response.status_code == 200, response.content
    return unmarshal_json(response.content, model)


@pytest.fixture
def customer():
    return CustomerFactory(external_id="acme")


@pytest.fixture
def wallet(customer):
    return wallets.wallet_create(customer=customer, currency="usd")


def create(api_client, **body):
    return api_client.post("/v1/wallets", {"currency": "usd", **body}, format="json")


def top_up(api_client, wallet, **body):
    body = {"transaction_reason": "PURCHASED_CREDIT_DIRECT", **body}
    return api_client.post(f"/v1/wallets/{wallet.pk}/top-up", body, format="json")


def balance(api_client, wallet) -> models.WalletBalanceResponse:
    return sdk(
        api_client.get(f"/v1/wallets/{wallet.pk}/balance/real-time"), models.WalletBalanceResponse
    )


# Creating and changing wallets.


def test_a_wallet_is_created_with_its_initial_free_credits(api_client, customer):
    response = create(
        api_client,
        external_customer_id="acme",
        currency="USD",
        name="Prepaid",
        initial_credits_to_load="10",
        initial_credits_to_load_expiry_date=int(f"{NEXT_YEAR}0101"),
        metadata={"team": "ml"},
    )
    wallet = sdk(response, models.WalletResponse)
    assert (wallet.customer_id, wallet.currency, wallet.wallet_type) == (
        customer.pk,
        "usd",
        "PRE_PAID",
    )
    assert (wallet.wallet_status, wallet.status, wallet.name) == ("active", "published", "Prepaid")
    assert wallet.credit_balance == wallet.balance == "10"
    assert wallet.credits_available_breakdown.free == "10"
    assert wallet.credits_available_breakdown.purchased == "0"
    assert wallet.config.allowed_price_types == ["USAGE"]
    block = WalletTransaction.objects.get(wallet_id=wallet.id)
    assert block.transaction_reason == Reason.FREE_CREDIT_GRANT
    assert block.expiry_date == datetime(NEXT_YEAR, 1, 1, tzinfo=UTC)


def test_auto_topup_and_alerts_are_stored_and_answered_in_the_sdk_shape(api_client, customer):
    response = create(
        api_client,
        customer_id=customer.pk,
        conversion_rate="0.5",
        topup_conversion_rate="0.5",
        auto_topup={
            "enabled": True,
            "threshold": 10.5,  # the SDK sends JSON floats
            "amount": 50,
            "invoicing": True,
            "cooldown": {"unit": "minute", "value": 120},
        },
        alert_settings={
            "alert_enabled": True,
            "alert_threshold_type": "absolute",
            "critical": {"threshold": "5", "condition": "below"},
        },
    )
    answer = sdk(response, models.WalletResponse)
    stored = Wallet.objects.get()
    assert stored.auto_topup_threshold == Decimal("10.5")
    assert stored.auto_topup_amount == Decimal(50) and stored.auto_topup_invoicing
    assert stored.auto_topup_cooldown == timedelta(hours=2)
    assert stored.conversion_rate == Decimal("0.5")
    assert answer.auto_topup.threshold == 10.5 and answer.auto_topup.amount == 50
    assert (answer.auto_topup.cooldown.unit, answer.auto_topup.cooldown.value) == ("hour", 2)
    assert answer.alert_settings.critical.threshold == "5"
    assert answer.alert_settings.critical.condition == "below"
    assert answer.conversion_rate == answer.topup_conversion_rate == "0.5"


REFUSED_WALLETS = [
    ({"price_unit": "tokens"}, "price_unit"),
    ({"topup_conversion_rate": "2"}, "topup_conversion_rate"),
    ({"config": {"allowed_price_types": ["FIXED"]}}, "config"),
    ({"wallet_type": "POST_PAID", "config": {"allowed_price_types": ["USAGE"]}}, "config"),
    ({"alert_settings": {"alert_threshold_type": "percentage"}}, "alert_settings"),
    ({"alert_settings": {"info": {"threshold": "5", "condition": "near"}}}, "alert_settings"),
    ({"alert_settings": {"info": {"threshold": "five"}}}, "alert_settings"),
    ({"auto_topup": {"enabled": True, "threshold": "1"}}, "auto_topup"),
    ({"auto_topup": {"cooldown": {"unit": "week", "value": 1}}}, "auto_topup"),
    ({"auto_topup": {"cooldown": {"unit": "day", "value": 400}}}, "auto_topup"),
    ({"auto_topup": {"amount": "-5"}}, "auto_topup"),
    (
        {"auto_topup": {"enabled": True, "threshold": 1, "amount": "0.001", "invoicing": True}},
        "auto_topup",
    ),
    ({"initial_credits_to_load": "-5"}, "initial_credits_to_load"),
    ({"initial_credits_to_load": "1_000"}, "initial_credits_to_load"),
    ({"initial_credits_to_load": "0.0000000000001"}, "initial_credits_to_load"),
    ({"initial_credits_to_load": "1e20"}, "initial_credits_to_load"),
    ({"conversion_rate": "0"}, "conversion_rate"),
    ({"initial_credits_to_load": "9" * 16}, "initial_credits_to_load"),
    ({"conversion_rate": "40", "initial_credits_to_load": "9" * 15}, "initial_credits_to_load"),
    ({"conversion_rate": "40", "auto_topup": {"amount": "9" * 15}}, "auto_topup"),
    ({"initial_credits_to_load_expiry_date": 20200101}, "initial_credits_to_load_expiry_date"),
    ({"initial_credits_to_load_expiry_date": 20271340}, "initial_credits_to_load_expiry_date"),
    (
        {
            "initial_credits_to_load_expiry_date": int(f"{NEXT_YEAR}0101"),
            "initial_credits_expiry_date_utc": f"{NEXT_YEAR}-01-01T00:00:00Z",
        },
        "initial_credits_to_load_expiry_date",
    ),
    ({"wallet_type": "CREDIT_CARD"}, "wallet_type"),
    ({"currency": "dollars"}, "currency"),
]


@pytest.mark.parametrize("body, field", REFUSED_WALLETS)
def test_a_wallet_body_tally_cannot_honour_is_a_400_naming_the_field(
    api_client, customer, body, field
):
    assert_error(create(api_client, customer_id=customer.pk, **body), 400, field)
    assert not Wallet.objects.exists() and not WalletTransaction.objects.exists()


def test_a_wallet_needs_a_customer_that_exists(api_client, customer):
    assert_error(create(api_client), 400, "customer_id")
    assert_error(create(api_client, external_customer_id="nobody"), 400, "external_customer_id")
    assert_error(create(api_client, customer_id="cust_nobody"), 400, "customer_id")
    assert not Wallet.objects.exists()


def test_a_second_open_wallet_in_a_currency_is_refused_until_the_first_is_closed(
    api_client, wallet, customer
):
    body = assert_error(create(api_client, customer_id=customer.pk), 400, "currency")
    assert body["code"] == "already_exists" and wallet.pk in body["message"]
    assert Wallet.objects.count() == 1
    assert create(api_client, customer_id=customer.pk, currency="eur").status_code == 200
    api_client.post(f"/v1/wallets/{wallet.pk}/terminate")
    assert create(api_client, customer_id=customer.pk).status_code == 200


def test_an_update_changes_what_is_sent_and_keeps_the_rest(api_client, customer):
    wallet = wallets.wallet_create(
        customer=customer,
        currency="usd",
        auto_topup_enabled=True,
        auto_topup_threshold=Decimal(5),
        auto_topup_amount=Decimal(20),
        alert_settings={
            "alert_enabled": True,
            "alert_threshold_type": "absolute",
            "info": {"threshold": "10", "condition": "below"},
            "critical": {"threshold": "1", "condition": "below"},
        },
    )
    response = api_client.put(
        f"/v1/wallets/{wallet.pk}",
        {
            "name": "Credits",
            "metadata": {"a": "b"},
            "auto_topup": {"enabled": False},
            "alert_settings": {"info": None, "warning": {"threshold": "3"}},
            "config": {"allowed_price_types": ["USAGE"]},
        },
        format="json",
    )
    answer = sdk(response, models.WalletResponse)
    wallet.refresh_from_db()
    assert (wallet.name, wallet.metadata) == ("Credits", {"a": "b"})
    assert not wallet.auto_topup_enabled and wallet.auto_topup_amount == Decimal(20)
    assert set(wallet.alert_settings) == {
        "alert_enabled",
        "alert_threshold_type",
        "warning",
        "critical",
    }
    assert answer.alert_settings.warning.threshold == "3"
    assert answer.alert_settings.warning.condition == "below"
    assert answer.auto_topup.enabled is False and answer.auto_topup.amount == 20


@pytest.mark.parametrize(
    "body, field",
    [
        ({"wallet_type": "POST_PAID"}, "wallet_type"),
        ({"conversion_rate": "2"}, "conversion_rate"),
        ({"name": "x", "auto_topup": {"enabled": True}}, "auto_topup"),
        ({"name": "x", "config": {"allowed_price_types": ["ALL"]}}, "config"),
    ],
)
def test_an_update_tally_cannot_honour_changes_nothing(api_client, wallet, body, field):
    assert_error(api_client.put(f"/v1/wallets/{wallet.pk}", body, format="json"), 400, field)
    wallet.refresh_from_db()
    assert wallet.name == "" and not wallet.auto_topup_enabled


def test_a_closed_wallet_is_not_changed(api_client, wallet):
    wallets.wallet_terminate(wallet=wallet)
    response = api_client.put(f"/v1/wallets/{wallet.pk}", {"name": "x"}, format="json")
    assert_error(response, 400)
    assert_error(api_client.post(f"/v1/wallets/{wallet.pk}/terminate"), 400)


def test_an_unknown_wallet_is_a_404_everywhere(api_client):
    for method, path in [
        ("get", "/v1/wallets/wallet_nope"),
        ("put", "/v1/wallets/wallet_nope"),
        ("post", "/v1/wallets/wallet_nope/top-up"),
        ("get", "/v1/wallets/wallet_nope/balance/real-time"),
        ("post", "/v1/wallets/wallet_nope/terminate"),
        ("get", "/v1/wallets/wallet_nope/transactions"),
    ]:
        assert_error(getattr(api_client, method)(path, {}, format="json"), 404)


# Listing and searching.


def test_a_customers_wallets_are_a_plain_list_by_id_or_lookup_key(api_client, wallet, customer):
    wallets.wallet_top_up(wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(7))
    by_id = sdk(api_client.get(f"/v1/customers/{customer.pk}/wallets"), list[models.WalletResponse])
    assert [w.id for w in by_id] == [wallet.pk] and by_id[0].real_time_balance is None
    looked_up = sdk(
        api_client.get(
            "/v1/customers/wallets",
            {"lookup_key": "acme", "include_real_time_balance": "true", "from_cache": "false"},
        ),
        list[models.WalletResponse],
    )
    assert looked_up[0].id == wallet.pk
    assert looked_up[0].real_time_balance == looked_up[0].balance == "7"
    by_query_id = api_client.get("/v1/customers/wallets", {"id": customer.pk}).json()
    assert [w["id"] for w in by_query_id] == [wallet.pk]
    assert_error(api_client.get("/v1/customers/wallets"), 400, "id")
    assert_error(api_client.get("/v1/customers/wallets", {"lookup_key": "nobody"}), 404)
    assert_error(api_client.get("/v1/customers/cust_nope/wallets"), 404)


def test_wallet_search_filters_by_ids_status_and_alerts(api_client, customer):
    alerting = wallets.wallet_create(
        customer=customer, currency="usd", alert_settings={"alert_enabled": True}
    )
    closed = wallets.wallet_terminate(
        wallet=wallets.wallet_create(customer=customer, currency="eur")
    )

    def search(**body):
        page = sdk(
            api_client.post("/v1/wallets/search", body, format="json"),
            models.ListResponseDtoWalletResponse,
        )
        return {w.id for w in page.items}

    assert search() == {alerting.pk, closed.pk}
    assert search(status="closed") == {closed.pk}
    assert search(alert_enabled=True) == {alerting.pk}
    assert search(alert_enabled=False) == {closed.pk}
    assert search(wallet_ids=[closed.pk]) == {closed.pk}
    assert search(limit=1, offset=1) <= {alerting.pk, closed.pk}
    response = api_client.post("/v1/wallets/search", {"sort": "created_at"}, format="json")
    assert_error(response, 400, "sort")


# Top-ups.


def test_a_top_up_answers_the_wallet_and_its_credit_block(api_client, wallet):
    expiry = f"{NEXT_YEAR}-03-01T00:00:00Z"
    response = top_up(
        api_client,
        wallet,
        credits_to_add="50",
        priority=1,
        expiry_date_utc=expiry,
        description="Order 1042",
        metadata={"order": "1042"},
    )
    answer = sdk(response, models.TopUpWalletResponse)
    assert answer.invoice_id is None
    assert answer.wallet.credit_balance == answer.wallet.balance == "50"
    assert answer.wallet.credits_available_breakdown.purchased == "50"
    entry = answer.wallet_transaction
    assert (entry.type, entry.transaction_status, entry.transaction_reason) == (
        "credit",
        "completed",
        "PURCHASED_CREDIT_DIRECT",
    )
    assert (entry.credit_amount, entry.credits_available, entry.priority) == ("50", "50", 1)
    assert entry.expiry_date == datetime(NEXT_YEAR, 3, 1, tzinfo=UTC)
    assert entry.metadata == {"order": "1042"} and entry.wallet_id == wallet.pk


def test_a_top_up_in_the_currency_is_converted_to_credits(api_client, customer):
    wallet = wallets.wallet_create(customer=customer, currency="usd", conversion_rate=Decimal(2))
    answer = sdk(top_up(api_client, wallet, amount="30"), models.TopUpWalletResponse)
    assert answer.wallet_transaction.credit_amount == "15"
    assert answer.wallet_transaction.amount == "30"
    assert (answer.wallet.credit_balance, answer.wallet.balance) == ("15", "30")


def test_a_replayed_top_up_is_counted_once_and_another_amount_under_its_key_is_refused(
    api_client, wallet
):
    first = sdk(
        top_up(api_client, wallet, credits_to_add="20", idempotency_key="order-1"),
        models.TopUpWalletResponse,
    )
    again = sdk(
        top_up(api_client, wallet, credits_to_add="20", idempotency_key="order-1"),
        models.TopUpWalletResponse,
    )
    assert again.wallet_transaction.id == first.wallet_transaction.id
    assert again.wallet.credit_balance == "20"
    response = top_up(api_client, wallet, credits_to_add="25", idempotency_key="order-1")
    assert_error(response, 400, "idempotency_key")
    assert balance(api_client, wallet).credit_balance == "20"
    assert WalletTransaction.objects.count() == 1


def test_bonus_credits_come_as_a_second_block_and_replay_with_the_purchase(api_client, wallet):
    body = {
        "credits_to_add": "100",
        "bonus_credits_to_add": "10",
        "bonus_credits_expiry_date_utc": f"{NEXT_YEAR}-01-01T00:00:00Z",
        "idempotency_key": "order-2",
    }
    answer = sdk(top_up(api_client, wallet, **body), models.TopUpWalletResponse)
    assert answer.wallet.credit_balance == "110"
    assert answer.wallet.credits_available_breakdown.free == "10"
    bonus = WalletTransaction.objects.get(transaction_reason=Reason.PURCHASED_CREDIT_BONUS)
    assert bonus.credit_amount == Decimal(10)
    assert bonus.expiry_date == datetime(NEXT_YEAR, 1, 1, tzinfo=UTC)
    page = api_client.get(f"/v1/wallets/{wallet.pk}/transactions", {"id": bonus.pk}).json()
    assert page["items"][0]["parent_transaction_id"] == answer.wallet_transaction.id
    assert sdk(top_up(api_client, wallet, **body), models.TopUpWalletResponse)
    response = top_up(api_client, wallet, **{**body, "bonus_credits_to_add": "20"})
    assert_error(response, 400, "idempotency_key")
    assert WalletTransaction.objects.count() == 2
    assert balance(api_client, wallet).credit_balance == "110"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"checkout": {}}, "checkout"),
        ({"coupons": []}, "coupons"),
        ({"effective_date": "2026-01-01T00:00:00Z"}, "effective_date"),
        ({"force_sync_invoice": True}, "force_sync_invoice"),
        ({"credits_to_add": "-5"}, "credits_to_add"),
        ({"credits_to_add": "0"}, "credits_to_add"),
        ({"credits_to_add": "ten"}, "credits_to_add"),
        ({"credits_to_add": "5", "amount": "5"}, "credits_to_add"),
        ({}, "credits_to_add"),
        ({"credits_to_add": "5", "transaction_reason": "INVOICE_PAYMENT"}, "transaction_reason"),
        ({"credits_to_add": "5", "transaction_reason": None}, "transaction_reason"),
        ({"credits_to_add": "5", "priority": -1}, "priority"),
        ({"credits_to_add": "5", "expiry_date_utc": "2020-01-01T00:00:00Z"}, "expiry_date_utc"),
        ({"credits_to_add": "5", "expiry_date_utc": 20270101}, "expiry_date_utc"),
        ({"credits_to_add": "5", "bonus_credits_to_add": "-1"}, "bonus_credits_to_add"),
        (
            {"credits_to_add": "5", "bonus_credits_expiry_date_utc": "2099-01-01T00:00:00Z"},
            "bonus_credits_expiry_date_utc",
        ),
        (
            {
                "credits_to_add": "5",
                "transaction_reason": "FREE_CREDIT_GRANT",
                "bonus_credits_to_add": "1",
            },
            "bonus_credits_to_add",
        ),
    ],
)
def test_a_top_up_tally_cannot_honour_is_a_400_and_adds_nothing(api_client, wallet, body, field):
    assert_error(top_up(api_client, wallet, **body), 400, field)
    assert not WalletTransaction.objects.exists() and not Invoice.objects.exists()


def test_a_top_up_worth_more_than_the_ledger_holds_is_refused(api_client, customer):
    wallet = wallets.wallet_create(customer=customer, currency="usd", conversion_rate=Decimal(40))
    assert_error(top_up(api_client, wallet, credits_to_add="9" * 15), 400, "credits_to_add")
    cheap = wallets.wallet_create(
        customer=customer, currency="eur", conversion_rate=Decimal("0.0001")
    )
    assert_error(top_up(api_client, cheap, amount="9" * 13), 400, "amount")
    assert not WalletTransaction.objects.exists()


def test_a_closed_wallet_is_not_topped_up(api_client, wallet):
    wallets.wallet_terminate(wallet=wallet)
    assert_error(top_up(api_client, wallet, credits_to_add="5"), 400)
    assert not WalletTransaction.objects.exists()


# Invoiced purchases and payments.


def test_an_invoiced_purchase_counts_once_its_invoice_is_paid(api_client, wallet):
    answer = sdk(
        top_up(
            api_client,
            wallet,
            transaction_reason="PURCHASED_CREDIT_INVOICED",
            credits_to_add="25",
            bonus_credits_to_add="5",
        ),
        models.TopUpWalletResponse,
    )
    assert answer.wallet_transaction.transaction_status == "pending"
    assert answer.wallet_transaction.credits_available == "0"
    assert answer.wallet_transaction.reference_type == "INVOICE"
    assert answer.wallet_transaction.reference_id == answer.invoice_id
    invoice = sdk(api_client.get(f"/v1/invoices/{answer.invoice_id}"), models.InvoiceResponse)
    assert (invoice.invoice_type, invoice.invoice_status, invoice.payment_status) == (
        "CREDIT",
        "FINALIZED",
        "PENDING",
    )
    assert (invoice.total, invoice.amount_due, invoice.amount_remaining) == (
        "25.00",
        "25.00",
        "25.00",
    )
    assert balance(api_client, wallet).credit_balance == "0"

    pay = f"/v1/invoices/{answer.invoice_id}/payment"
    wrong = api_client.put(pay, {"payment_status": "SUCCEEDED", "amount": "20"}, format="json")
    assert_error(wrong, 400, "amount")
    assert_error(api_client.put(pay, {"payment_status": "PAID"}, format="json"), 400)
    assert_error(
        api_client.put(pay, {"payment_status": "SUCCEEDED", "tip": "1"}, format="json"), 400
    )
    assert Invoice.objects.get(pk=answer.invoice_id).payment_status == "PENDING"
    assert balance(api_client, wallet).credit_balance == "0"

    paid = sdk(
        api_client.put(pay, {"payment_status": "SUCCEEDED", "amount": "25.00"}, format="json"),
        models.InvoiceResponse,
    )
    assert (paid.payment_status, paid.amount_paid, paid.amount_remaining) == (
        "SUCCEEDED",
        "25.00",
        "0.00",
    )
    assert paid.paid_at is not None
    live = balance(api_client, wallet)
    assert live.credit_balance == "30"
    assert (live.credits_available_breakdown.purchased, live.credits_available_breakdown.free) == (
        "25",
        "5",
    )
    replay = api_client.put(pay, {"payment_status": "SUCCEEDED"}, format="json")
    assert sdk(replay, models.InvoiceResponse).amount_paid == "25.00"
    assert balance(api_client, wallet).credit_balance == "30"


def test_a_payment_for_an_unknown_or_draft_invoice_is_refused(api_client, wallet):
    body = {"payment_status": "SUCCEEDED"}
    assert_error(api_client.put("/v1/invoices/inv_nope/payment", body, format="json"), 404)
    subscription = SubscriptionFactory(customer=wallet.customer, plan=PriceFactory().plan)
    draft = Invoice.objects.get(subscription=subscription)
    assert_error(api_client.put(f"/v1/invoices/{draft.pk}/payment", body, format="json"), 400)


# The ledger.


def test_transactions_show_debits_consuming_blocks_in_priority_expiry_age_order(api_client, wallet):
    later = timezone.now() + timedelta(days=30)
    last = wallets.wallet_top_up(wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(5))
    second = wallets.wallet_top_up(
        wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, credits=Decimal(10), priority=2
    )
    first = wallets.wallet_top_up(
        wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(5), priority=1
    )
    third = wallets.wallet_top_up(
        wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(3), expiry_date=later
    )
    debit = wallets.wallet_debit(wallet=wallet, credits=Decimal(19), description="Refund")

    page = sdk(
        api_client.get(f"/v1/wallets/{wallet.pk}/transactions"),
        models.ListWalletTransactionsResponse,
    )
    assert page.pagination.total == 5
    assert page.items[0].id == debit.pk  # newest first
    breakdown = [(c.credit_transaction_id, c.credits) for c in page.items[0].consumption_breakdown]
    assert breakdown == [(first.pk, "5"), (second.pk, "10"), (third.pk, "3"), (last.pk, "1")]
    available = {t.id: t.credits_available for t in page.items}
    assert available == {debit.pk: "0", first.pk: "0", second.pk: "0", third.pk: "0", last.pk: "4"}

    def listed(**query):
        response = api_client.get(f"/v1/wallets/{wallet.pk}/transactions", query)
        return [
            t["id"]
            for t in sdk(response, models.ListWalletTransactionsResponse).model_dump()["items"]
        ]

    assert listed(type="debit") == [debit.pk]
    assert listed(credits_available_gt="0") == [last.pk]
    assert listed(priority=2) == [second.pk]
    assert listed(expiry_date_after=timezone.now().isoformat()) == [third.pk]
    assert listed(transaction_reason="PURCHASED_CREDIT_DIRECT") == [second.pk]
    assert listed(limit=2, offset=4) == [last.pk]
    response = api_client.get(f"/v1/wallets/{wallet.pk}/transactions", {"type": "refund"})
    assert_error(response, 400, "type")


def test_transaction_search_spans_wallets_and_refuses_filters_it_does_not_implement(
    api_client, wallet, customer
):
    other = wallets.wallet_create(customer=customer, currency="eur")
    one = wallets.wallet_top_up(wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(1))
    two = wallets.wallet_top_up(wallet=other, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(2))

    def search(**body):
        response = api_client.post("/v1/wallets/transactions/search", body, format="json")
        page = sdk(response, models.ListWalletTransactionsResponse)
        return [t.id for t in page.items]

    assert search() == [two.pk, one.pk]
    assert search(order="asc") == [one.pk, two.pk]
    assert search(credits_available_gt=1.5) == [two.pk]
    assert search(id=one.pk, type="credit", transaction_status="completed") == [one.pk]
    assert search(reference_type="INVOICE") == []
    for body, field in [
        ({"filters": [{"field": "amount"}]}, "filters"),
        ({"sort": [{"field": "amount"}]}, "sort"),
        ({"credits_available_gt": "lots"}, "credits_available_gt"),
        ({"limit": 0}, "limit"),
    ]:
        response = api_client.post("/v1/wallets/transactions/search", body, format="json")
        assert_error(response, 400, field)


def test_terminating_debits_what_is_left_and_closes_the_wallet(api_client, wallet):
    wallets.wallet_top_up(wallet=wallet, reason=Reason.FREE_CREDIT_GRANT, credits=Decimal(8))
    answer = sdk(api_client.post(f"/v1/wallets/{wallet.pk}/terminate"), models.WalletResponse)
    assert (answer.wallet_status, answer.credit_balance) == ("closed", "0")
    debit = WalletTransaction.objects.get(type="debit")
    assert (debit.transaction_reason, debit.credit_amount) == ("WALLET_TERMINATION", Decimal(8))


# Real-time balance and invoices.


def test_the_real_time_balance_takes_off_the_open_periods_usage_and_the_preview_shows_it(
    api_client, wallet
):
    price = PriceFactory()  # $15 per million tokens, whole packages
    subscription = SubscriptionFactory(customer=wallet.customer, plan=price.plan)
    wallets.wallet_top_up(wallet=wallet, reason=Reason.PURCHASED_CREDIT_DIRECT, credits=Decimal(40))
    ingest(
        {
            "event_name": "tokens",
            "external_customer_id": "acme",
            "properties": {"tokens": "2500000"},
        }
    )
    live = balance(api_client, wallet)
    assert (live.balance, live.current_period_usage, live.real_time_balance) == ("40", "45", "-5")
    assert live.real_time_credit_balance == "-5" and live.is_cached_fallback is False
    assert live.balance_updated_at is not None
    preview = sdk(
        api_client.post(
            "/v1/invoices/preview", {"subscription_id": subscription.pk}, format="json"
        ),
        models.InvoiceResponse,
    )
    assert (preview.subtotal, preview.total_prepaid_credits_applied, preview.total) == (
        "45.00",
        "40.00",
        "5.00",
    )
    assert (preview.amount_due, preview.amount_paid, preview.amount_remaining) == (
        "5.00",
        "0.00",
        "5.00",
    )


def test_a_top_up_refreshes_the_draft_with_the_credits_it_would_apply(
    api_client, wallet, django_capture_on_commit_callbacks
):
    price = PriceFactory()
    subscription = SubscriptionFactory(customer=wallet.customer, plan=price.plan)
    ingest({"event_name": "tokens", "external_customer_id": "acme", "properties": {"tokens": "1"}})
    draft = Invoice.objects.get(subscription=subscription)
    services.invoice_propose(subscription=subscription)
    draft.refresh_from_db()
    assert (draft.subtotal, draft.total_prepaid_credits_applied) == (Decimal(15), Decimal(0))
    with django_capture_on_commit_callbacks(execute=True):
        sdk(top_up(api_client, wallet, credits_to_add="4"), models.TopUpWalletResponse)
    draft.refresh_from_db()
    assert (draft.total_prepaid_credits_applied, draft.total) == (Decimal(4), Decimal(11))


@pytest.mark.django_db(transaction=True)
def test_a_wallet_committed_while_another_is_created_makes_that_one_a_clean_400(api_client):
    """The race the pre-check cannot see: another transaction inserts the customer's wallet
    and commits only after this request checked. The unique index decides; the answer is
    the same 400 as the pre-check's, never a 500."""
    from django.db import connection, connections, transaction

    if connection.vendor != "postgresql":
        pytest.skip("SQLite serializes writers: the race needs PostgreSQL")
    customer = CustomerFactory(external_id="acme")
    inserted, release = threading.Event(), threading.Event()

    def other_request():
        try:
            with transaction.atomic():
                Wallet.objects.create(customer_id=customer.pk, currency="usd")
                inserted.set()
                release.wait(5)
        finally:
            connections.close_all()

    other = threading.Thread(target=other_request)
    other.start()
    assert inserted.wait(5)
    threading.Timer(0.5, release.set).start()  # commits while this request's insert waits
    response = create(api_client, customer_id=customer.pk)
    other.join()
    body = assert_error(response, 400, "currency")
    assert body["code"] == "already_exists"
    assert Wallet.objects.count() == 1 and not WalletTransaction.objects.exists()


def test_a_page_of_wallets_reads_its_ledgers_in_a_fixed_number_of_queries(api_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def page_queries() -> int:
        with CaptureQueriesContext(connection) as run:
            response = api_client.post("/v1/wallets/search", {"limit": 50}, format="json")
        assert response.status_code == 200
        return len(run.captured_queries)

    def add_wallets(n):
        for _ in range(n):
            wallet = wallets.wallet_create(customer=CustomerFactory(), currency="usd")
            wallets.wallet_top_up(wallet=wallet, reason="FREE_CREDIT_GRANT", credits=Decimal(3))

    add_wallets(2)
    page_queries()  # the API key is looked up once, then remembered
    few = page_queries()
    add_wallets(8)
    assert page_queries() == few
