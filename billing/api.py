"""Subscriptions and invoices under /v1/, in Flexprice's wire format."""

import django_filters
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import selectors, services
from billing.models import Invoice, InvoiceLineItem, Subscription
from catalog.models import BillingPeriod, Plan
from catalog.money import round_money
from config.bounds import Moment, MomentFilter
from config.resources import (
    DECIMAL_SCHEMA,
    METADATA_SCHEMA,
    Amount,
    Body,
    Constant,
    CreatableResourceViewSet,
    ExistingId,
    Ids,
    MessageSerializer,
    Metadata,
    ResourceViewSet,
    SearchRequest,
    one_page,
    page_of,
    resource_schema,
)
from config.schema import error_response
from metering.models import Customer

SUBSCRIPTION_EXAMPLE = {
    "id": "sub_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "customer_id": "cust_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "plan_id": "plan_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "currency": "usd",
    "subscription_status": "active",
    "status": "published",
    "billing_cadence": "RECURRING",
    "billing_period": "MONTHLY",
    "billing_period_count": 1,
    "billing_cycle": "anniversary",
    "billing_anchor": "2026-11-01T00:00:00Z",
    "start_date": "2026-11-01T00:00:00Z",
    "end_date": None,
    "current_period_start": "2026-11-01T00:00:00Z",
    "current_period_end": "2026-12-01T00:00:00Z",
    "cancel_at_period_end": False,
    "cancelled_at": None,
    "auto_invoice_threshold": "500",
    "metadata": {},
    "created_at": "2026-11-01T00:00:00Z",
    "updated_at": "2026-11-01T00:00:00Z",
}


@extend_schema_serializer(
    examples=[
        OpenApiExample("A monthly subscription", value=SUBSCRIPTION_EXAMPLE, response_only=True)
    ]
)
class SubscriptionSerializer(serializers.ModelSerializer):
    customer_id = serializers.CharField()
    plan_id = serializers.CharField()
    subscription_status = serializers.CharField(source="status")
    status = Constant("published")
    billing_cadence = Constant("RECURRING")
    auto_invoice_threshold = Amount(allow_null=True, help_text="Null: no interim invoices.")
    metadata = Metadata()

    class Meta:
        model = Subscription
        fields = [
            "id",
            "customer_id",
            "plan_id",
            "currency",
            "subscription_status",
            "status",
            "billing_cadence",
            "billing_period",
            "billing_period_count",
            "billing_cycle",
            "billing_anchor",
            "start_date",
            "end_date",
            "current_period_start",
            "current_period_end",
            "cancel_at_period_end",
            "cancelled_at",
            "auto_invoice_threshold",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "By external customer id",
            value={
                "external_customer_id": "user_42",
                "plan_id": SUBSCRIPTION_EXAMPLE["plan_id"],
                "currency": "usd",
                "billing_period": "MONTHLY",
                "billing_cycle": "anniversary",
                "start_date": "2026-11-01T00:00:00Z",
            },
            request_only=True,
        )
    ]
)
class SubscriptionCreateSerializer(Body):
    plan_id = ExistingId(Plan)
    customer_id = ExistingId(Customer, required=False)
    external_customer_id = serializers.CharField(required=False, max_length=255)
    currency = serializers.RegexField(r"^[A-Za-z]{3}$", required=False)
    billing_period = serializers.ChoiceField(BillingPeriod.choices, required=False)
    billing_period_count = serializers.IntegerField(required=False, min_value=1, default=1)
    billing_cycle = serializers.ChoiceField(Subscription.Cycle.values, required=False)
    start_date = Moment(required=False)
    end_date = Moment(required=False)
    billing_anchor = Moment(required=False)
    auto_invoice_threshold = Amount(
        required=False,
        allow_null=True,
        help_text="In the subscription's currency, more than 0, in whole minor units: when the "
        "usage due since the period's last invoice reaches it, an AUTO_INVOICE_THRESHOLD "
        "invoice is finalized for the usage so far.",
    )
    metadata = Metadata(required=False)

    def validate(self, data):
        customer = data.pop("customer_id", None)
        external_id = data.pop("external_customer_id", None)
        if customer is None and external_id:
            customer = Customer.objects.filter(external_id=external_id).first()
            if customer is None:
                raise serializers.ValidationError(
                    {"external_customer_id": f"No customer has the external id {external_id!r}."}
                )
        if customer is None:
            raise serializers.ValidationError(
                {"customer_id": "Give customer_id or external_customer_id."}
            )
        data["customer"] = customer
        data["plan"] = data.pop("plan_id")
        return data


class SubscriptionFilter(django_filters.FilterSet):
    customer_id = django_filters.CharFilter()
    external_customer_id = django_filters.CharFilter(field_name="customer__external_id")
    plan_id = django_filters.CharFilter()
    subscription_status = django_filters.CharFilter(field_name="status")

    class Meta:
        model = Subscription
        fields = ["customer_id", "external_customer_id", "plan_id", "subscription_status"]


class SubscriptionSearchSerializer(SearchRequest):
    subscription_ids = Ids(required=False)
    customer_id = serializers.CharField(required=False)
    customer_ids = Ids(required=False)
    external_customer_id = serializers.CharField(required=False)
    plan_id = serializers.CharField(required=False)
    subscription_status = Ids(required=False)

    lookups = {
        "subscription_ids": "id__in",
        "customer_id": "customer_id",
        "customer_ids": "customer_id__in",
        "external_customer_id": "customer__external_id",
        "plan_id": "plan_id",
        "subscription_status": "status__in",
    }


@resource_schema
class SubscriptionViewSet(CreatableResourceViewSet):
    queryset = Subscription.objects.all()
    serializer_class = SubscriptionSerializer
    filterset_class = SubscriptionFilter
    search_class = SubscriptionSearchSerializer
    create_serializer_class = SubscriptionCreateSerializer
    create_service = staticmethod(services.subscription_create)


class CustomerSubscriptionsView(APIView):
    """Every subscription of one customer, by external id; no paging, as Flexprice does."""

    @extend_schema(
        responses=page_of(SubscriptionSerializer),
        examples=[
            OpenApiExample(
                "One subscription",
                value={
                    "items": [SUBSCRIPTION_EXAMPLE],
                    "pagination": {"total": 1, "limit": 1, "offset": 0},
                },
            )
        ],
    )
    def get(self, request, external_id):
        customer = get_object_or_404(Customer, external_id=external_id)
        items = SubscriptionSerializer(customer.subscriptions.all(), many=True).data
        return Response(one_page(items))


class CancelSerializer(Body):
    cancellation_type = serializers.ChoiceField(["immediate", "end_of_period"])
    reason = serializers.CharField(required=False, allow_blank=True)


class CancelResultSerializer(serializers.Serializer):
    subscription_id = serializers.CharField()
    status = serializers.ChoiceField(Subscription.Status.choices)
    cancellation_type = serializers.ChoiceField(["immediate", "end_of_period"])
    effective_date = serializers.DateTimeField()
    processed_at = serializers.DateTimeField()
    reason = serializers.CharField(allow_blank=True)
    message = serializers.CharField()


class SubscriptionCancelView(APIView):
    @extend_schema(
        request=CancelSerializer,
        responses={200: CancelResultSerializer},
        examples=[
            OpenApiExample(
                "At the end of the period",
                value={"cancellation_type": "end_of_period", "reason": "moving to annual"},
                request_only=True,
            ),
            OpenApiExample(
                "Cancelled",
                value={
                    "subscription_id": SUBSCRIPTION_EXAMPLE["id"],
                    "status": "active",
                    "cancellation_type": "end_of_period",
                    "effective_date": "2026-12-01T00:00:00Z",
                    "processed_at": "2026-11-27T10:00:00Z",
                    "reason": "moving to annual",
                    "message": "subscription cancelled",
                },
                response_only=True,
            ),
        ],
    )
    def post(self, request, pk):
        body = CancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        kind = body.validated_data["cancellation_type"]
        subscription = services.subscription_cancel(
            subscription=get_object_or_404(Subscription, pk=pk), cancellation_type=kind
        )
        effective = subscription.cancelled_at or subscription.end_date
        return Response(
            {
                "subscription_id": subscription.pk,
                "status": subscription.status,
                "cancellation_type": kind,
                "effective_date": effective.isoformat().replace("+00:00", "Z"),
                "processed_at": subscription.updated_at.isoformat().replace("+00:00", "Z"),
                "reason": body.validated_data.get("reason", ""),
                "message": "subscription cancelled",
            }
        )


@extend_schema_field(DECIMAL_SCHEMA)
class Money(serializers.Field):
    """An amount rounded to its row's currency, as a string: "202.50"."""

    def __init__(self, **kwargs):
        super().__init__(source="*", read_only=True, **kwargs)

    def bind(self, field_name, parent):
        super().bind(field_name, parent)
        self.attribute = field_name

    def to_representation(self, row):
        return format(round_money(getattr(row, self.attribute), row.currency), "f")


class LineItemSerializer(serializers.ModelSerializer):
    id = serializers.SerializerMethodField()
    price_id = serializers.CharField()
    meter_id = serializers.CharField(allow_null=True)
    quantity = Amount()
    amount = Money()
    packages = Amount(allow_null=True)
    pricing = serializers.JSONField(source="terms", help_text="The price's terms when priced.")
    meter = serializers.JSONField(
        source="meter_definition", allow_null=True, help_text="The meter when priced."
    )

    class Meta:
        model = InvoiceLineItem
        fields = [
            "id",
            "price_id",
            "price_type",
            "meter_id",
            "display_name",
            "quantity",
            "amount",
            "currency",
            "period_start",
            "period_end",
            "invoice_cadence",
            "packages",
            "event_count",
            "pricing",
            "meter",
        ]
        read_only_fields = fields

    def get_id(self, line) -> str:
        return f"li_{line.pk}" if line.pk else f"li_preview_{line.price_id}"


PREVIEW_EXAMPLE = {
    "id": "inv_preview_sub_01JD7X8Y9Z",
    "customer_id": "cust_01JD7X8Y9Z",
    "subscription_id": "sub_01JD7X8Y9Z",
    "invoice_type": "SUBSCRIPTION",
    "invoice_status": "DRAFT",
    "payment_status": "PENDING",
    "billing_reason": "SUBSCRIPTION_CYCLE",
    "currency": "usd",
    "subtotal": "23.00",
    "total_prepaid_credits_applied": "0.00",
    "total": "23.00",
    "amount_due": "23.00",
    "amount_paid": "0.00",
    "amount_remaining": "23.00",
    "paid_at": None,
    "period_start": "2026-11-01T00:00:00Z",
    "period_end": "2026-12-01T00:00:00Z",
    "invoice_number": None,
    "finalized_at": None,
    "due_date": None,
    "voided_at": None,
    "last_computed_at": None,
    "line_items": [
        {
            "id": "li_preview_price_base",
            "price_id": "price_base",
            "price_type": "FIXED",
            "meter_id": None,
            "display_name": "Base fee",
            "quantity": "1",
            "amount": "20.00",
            "currency": "usd",
            "period_start": "2026-11-01T00:00:00Z",
            "period_end": "2026-12-01T00:00:00Z",
            "invoice_cadence": "ADVANCE",
            "packages": None,
            "event_count": 0,
            "pricing": {},
            "meter": None,
        }
    ],
    "metadata": {},
    "created_at": "2026-11-27T10:00:00Z",
    "updated_at": "2026-11-27T10:00:00Z",
}
INVOICE_EXAMPLE = {
    **PREVIEW_EXAMPLE,
    "id": "inv_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
    "invoice_status": "FINALIZED",
    "invoice_number": "INV-202612-0001",
    "finalized_at": "2026-12-01T00:05:00Z",
    "due_date": "2026-12-31T00:05:00Z",
    "last_computed_at": "2026-12-01T00:05:00Z",
    "line_items": [{**PREVIEW_EXAMPLE["line_items"][0], "id": "li_1"}],
}


@extend_schema_serializer(
    examples=[OpenApiExample("A finalized invoice", value=INVOICE_EXAMPLE, response_only=True)]
)
class InvoiceSerializer(serializers.ModelSerializer):
    customer_id = serializers.CharField()
    subscription_id = serializers.CharField(allow_null=True)
    subtotal = Money()
    total_prepaid_credits_applied = Money()
    total = Money()
    amount_due = serializers.SerializerMethodField()
    amount_paid = Money()
    amount_remaining = serializers.SerializerMethodField()
    line_items = serializers.SerializerMethodField()
    metadata = Constant({}, schema=METADATA_SCHEMA)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "customer_id",
            "subscription_id",
            "invoice_type",
            "invoice_status",
            "payment_status",
            "billing_reason",
            "currency",
            "subtotal",
            "total_prepaid_credits_applied",
            "total",
            "amount_due",
            "amount_paid",
            "amount_remaining",
            "paid_at",
            "period_start",
            "period_end",
            "invoice_number",
            "finalized_at",
            "due_date",
            "voided_at",
            "last_computed_at",
            "line_items",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_amount_due(self, invoice) -> str:
        return format(round_money(invoice.amount_due, invoice.currency), "f")

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_amount_remaining(self, invoice) -> str:
        return format(round_money(invoice.amount_remaining, invoice.currency), "f")

    def get_line_items(self, invoice) -> list[dict]:
        lines = getattr(invoice, "preview_lines", None)
        if lines is None:
            lines = invoice.line_items.all()
        return LineItemSerializer(lines, many=True).data


class InvoiceFilter(django_filters.FilterSet):
    subscription_id = django_filters.CharFilter()
    customer_id = django_filters.CharFilter()
    external_customer_id = django_filters.CharFilter(field_name="customer__external_id")
    invoice_status = django_filters.MultipleChoiceFilter(choices=Invoice.Status.choices)
    period_start_gte = MomentFilter("period_start", lookup_expr="gte")
    period_start_lte = MomentFilter("period_start", lookup_expr="lte")
    period_end_gte = MomentFilter("period_end", lookup_expr="gte")
    period_end_lte = MomentFilter("period_end", lookup_expr="lte")

    class Meta:
        model = Invoice
        fields = ["subscription_id", "customer_id", "external_customer_id", "invoice_status"]


class InvoiceSearchSerializer(SearchRequest):
    invoice_ids = Ids(required=False)
    customer_id = serializers.CharField(required=False)
    external_customer_id = serializers.CharField(required=False)
    subscription_id = serializers.CharField(required=False)
    invoice_status = Ids(required=False)
    payment_status = Ids(required=False)
    period_start_gte = Moment(required=False)
    period_start_lte = Moment(required=False)
    period_end_gte = Moment(required=False)
    period_end_lte = Moment(required=False)

    lookups = {
        "invoice_ids": "id__in",
        "customer_id": "customer_id",
        "external_customer_id": "customer__external_id",
        "subscription_id": "subscription_id",
        "invoice_status": "invoice_status__in",
        "payment_status": "payment_status__in",
        "period_start_gte": "period_start__gte",
        "period_start_lte": "period_start__lte",
        "period_end_gte": "period_end__gte",
        "period_end_lte": "period_end__lte",
    }


@resource_schema
class InvoiceViewSet(ResourceViewSet):
    queryset = Invoice.objects.prefetch_related("line_items")
    serializer_class = InvoiceSerializer
    filterset_class = InvoiceFilter
    search_class = InvoiceSearchSerializer


class InvoiceActionView(APIView):
    """``finalize`` or ``void``; an illegal transition is a 400 that says why."""

    service = None  # services.invoice_finalize or services.invoice_void
    message = ""

    @extend_schema(
        request=None,
        responses={200: MessageSerializer, 400: error_response(400)},
        examples=[OpenApiExample("Done", value={"message": "invoice finalized"})],
    )
    def post(self, request, pk):
        self.service(invoice=get_object_or_404(Invoice, pk=pk))
        return Response({"message": self.message})


class LateLineSerializer(serializers.Serializer):
    line_item_id = serializers.SerializerMethodField()
    price_id = serializers.CharField(source="line.price_id")
    meter_id = serializers.CharField(source="line.meter_id", allow_null=True)
    display_name = serializers.CharField(source="line.display_name")
    invoiced_quantity = Amount(source="line.quantity")
    invoiced_event_count = serializers.IntegerField(source="line.event_count")
    invoiced_amount = serializers.SerializerMethodField()
    late_event_count = serializers.IntegerField(source="event_count")
    late_quantity = Amount(source="quantity")
    late_amount = serializers.SerializerMethodField()

    def get_line_item_id(self, late) -> str:
        return f"li_{late.line.pk}"

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_invoiced_amount(self, late) -> str:
        return format(round_money(late.line.amount, late.line.currency), "f")

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_late_amount(self, late) -> str:
        return format(round_money(late.amount, late.line.currency), "f")


class LateUsageSerializer(serializers.Serializer):
    invoice_id = serializers.CharField(source="invoice.pk")
    invoice_status = serializers.CharField(source="invoice.invoice_status")
    currency = serializers.CharField(source="invoice.currency")
    usage_fence = serializers.IntegerField(source="invoice.usage_fence")
    late_event_count = serializers.IntegerField(source="event_count")
    late_amount = serializers.SerializerMethodField()
    line_items = LateLineSerializer(source="lines", many=True)

    @extend_schema_field(DECIMAL_SCHEMA)
    def get_late_amount(self, late) -> str:
        return format(round_money(late.amount, late.invoice.currency), "f")


class InvoiceLateUsageView(APIView):
    """``GET /v1/invoices/{id}/late_usage``: per usage line of a closed invoice, the events of
    its period stored after finalization read them, what they add and what they would cost."""

    @extend_schema(
        responses={200: LateUsageSerializer, 400: error_response(400)},
        examples=[
            OpenApiExample(
                "Tokens that arrived after finalization",
                value={
                    "invoice_id": INVOICE_EXAMPLE["id"],
                    "invoice_status": "FINALIZED",
                    "currency": "usd",
                    "usage_fence": 1042,
                    "late_event_count": 3,
                    "late_amount": "0.40",
                    "line_items": [
                        {
                            "line_item_id": "li_2",
                            "price_id": "price_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
                            "meter_id": "meter_01JD7X8Y9ZK2M3N4P5Q6R7S8T9",
                            "display_name": "Tokens",
                            "invoiced_quantity": "1500",
                            "invoiced_event_count": 1,
                            "invoiced_amount": "4.00",
                            "late_event_count": 3,
                            "late_quantity": "200",
                            "late_amount": "0.40",
                        }
                    ],
                },
                response_only=True,
                status_codes=["200"],
            )
        ],
    )
    def get(self, request, pk):
        invoice = get_object_or_404(
            Invoice.objects.select_related("customer", "subscription").prefetch_related(
                "line_items__meter"
            ),
            pk=pk,
        )
        if invoice.invoice_status not in selectors.CLOSED_STATUSES:
            raise serializers.ValidationError(
                {
                    "invoice_status": f"The invoice is {invoice.invoice_status}: its usage is "
                    "still being billed. Late usage is for finalized, voided or skipped invoices."
                }
            )
        return Response(LateUsageSerializer(selectors.invoice_late_usage(invoice=invoice)).data)


class PreviewSerializer(Body):
    subscription_id = ExistingId(Subscription)
    period_start = Moment(required=False)
    period_end = Moment(required=False)
    hide_zero_charges_line_items = serializers.BooleanField(required=False, default=False)

    def validate(self, data):
        subscription = data["subscription_id"]
        data.setdefault("period_start", subscription.current_period_start)
        data.setdefault("period_end", subscription.current_period_end)
        if data["period_start"] >= data["period_end"]:
            raise serializers.ValidationError(
                {"period_end": "period_end must be after period_start."}
            )
        return data


def preview_invoice(proposal: services.Proposal, *, hide_zero: bool) -> Invoice:
    """The proposal as an unsaved Invoice, so it renders exactly like a stored one."""
    subscription = proposal.subscription
    invoice = Invoice(
        id=f"inv_preview_{subscription.pk}",
        customer_id=subscription.customer_id,
        subscription=subscription,
        billing_reason=proposal.billing_reason,
        currency=proposal.currency,
        subtotal=proposal.total,
        total_prepaid_credits_applied=proposal.prepaid_credits(),
        period_start=proposal.period_start,
        period_end=proposal.period_end,
        created_at=timezone.now(),
        updated_at=timezone.now(),
    )
    invoice.total = invoice.subtotal - invoice.total_prepaid_credits_applied
    invoice.preview_lines = [
        line.as_item() for line in proposal.lines if not (hide_zero and line.amount == 0)
    ]
    return invoice


class InvoicePreviewView(APIView):
    """The invoice for a period, computed live; nothing is stored."""

    @extend_schema(
        request=PreviewSerializer,
        responses={200: InvoiceSerializer},
        examples=[
            OpenApiExample(
                "The current period",
                value={"subscription_id": "sub_01JD7X8Y9Z", "hide_zero_charges_line_items": True},
                request_only=True,
            ),
            OpenApiExample(
                "A base fee and token usage",
                value=PREVIEW_EXAMPLE,
                response_only=True,
            ),
        ],
    )
    def post(self, request):
        body = PreviewSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        proposal = services.invoice_compute(
            subscription=data["subscription_id"],
            period_start=data["period_start"],
            period_end=data["period_end"],
        )
        invoice = preview_invoice(proposal, hide_zero=data["hide_zero_charges_line_items"])
        return Response(InvoiceSerializer(invoice).data)
