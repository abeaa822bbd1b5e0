"""Events and usage under /v1/events, in Flexprice's wire format.

Ingestion is hand-parsed rather than run through serializers: it is the hot path.
"""

from datetime import timedelta
from types import SimpleNamespace

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.fields import empty
from rest_framework.response import Response
from rest_framework.utils import html
from rest_framework.views import APIView

from catalog import names
from catalog.models import Meter
from catalog.validation import validate_meter
from config.api import error_response
from config.bounds import MAX_OFFSET, Moment
from config.resources import Amount
from config.schema import error_response as documented_error
from metering import selectors
from metering.ingestion import (
    MAX_BATCH,
    MAX_DEPTH,
    MAX_PROPERTIES_BYTES,
    MAX_TEXT,
    BulkRejected,
    EventRejected,
    event_list,
    event_parse,
    events_batch_ingest,
    events_bulk_ingest,
    meters_by_event_name,
    single_events,
)
from metering.matching import events_with_properties
from metering.models import Customer, Event

# What the hand parser reads and the views answer, for the schema (ingestion is not run
# through these serializers: it is the hot path, and event_parse is the one rule book).


class IngestEvent(serializers.Serializer):
    event_name = serializers.CharField(
        max_length=MAX_TEXT, help_text="Printable; a meter must use it, or the event is refused."
    )
    external_customer_id = serializers.CharField(max_length=MAX_TEXT)
    event_id = serializers.CharField(
        required=False,
        max_length=MAX_TEXT,
        help_text="Idempotency key: an id already stored is a duplicate. Generated when absent.",
    )
    source = serializers.CharField(required=False, allow_blank=True, max_length=MAX_TEXT)
    timestamp = serializers.DateTimeField(
        required=False,
        help_text="RFC 3339; without an offset it is UTC. Default: now. "
        "At most 5 minutes in the future.",
    )
    properties = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text=f"Any JSON object of at most {MAX_PROPERTIES_BYTES} bytes, nested at most "
        f"{MAX_DEPTH} levels, without NUL. Numbers may be sent as strings.",
    )


class BulkIngestEvent(serializers.Serializer):
    events = IngestEvent(many=True, allow_empty=False, max_length=MAX_BATCH)


class EventAccepted(serializers.Serializer):
    message = serializers.CharField()
    event_id = serializers.CharField()


class BulkAccepted(serializers.Serializer):
    """Every value is a string: the SDK parses this answer as ``{str: str}``."""

    message = serializers.CharField()
    accepted = serializers.RegexField(r"^[0-9]+$", help_text="Events stored, as a string.")
    duplicates = serializers.RegexField(r"^[0-9]+$", help_text="Events already stored.")


class BatchItemResult(serializers.Serializer):
    index = serializers.IntegerField(help_text="The event's position in ``events``.")
    event_id = serializers.CharField(required=False, help_text="Absent when rejected.")
    status = serializers.ChoiceField(["accepted", "duplicate", "rejected"])
    reason = serializers.CharField(required=False, help_text="Why it was rejected.")


class BatchResult(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = BatchItemResult(many=True)


class EventOut(serializers.Serializer):
    id = serializers.CharField()
    event_name = serializers.CharField()
    external_customer_id = serializers.CharField()
    source = serializers.CharField()
    properties = serializers.DictField(child=serializers.JSONField())
    timestamp = serializers.DateTimeField()
    ingested_at = serializers.DateTimeField()


class EventsPage(serializers.Serializer):
    events = EventOut(many=True)
    has_more = serializers.BooleanField()
    offset = serializers.IntegerField()


class UsageWindowResult(serializers.Serializer):
    window_size = serializers.DateTimeField(help_text="The start of the window.")
    value = Amount()


class UsageResult(serializers.Serializer):
    event_name = serializers.CharField()
    type = serializers.ChoiceField(Meter.Aggregation.choices)
    value = Amount()
    results = UsageWindowResult(many=True, help_text="Per window when window_size is given.")


EVENT_EXAMPLE = {
    "event_name": "llm.tokens",
    "external_customer_id": "user_42",
    "event_id": "evt_2026_11_27_0001",
    "timestamp": "2026-11-27T10:00:00Z",
    "source": "api",
    "properties": {"tokens": "1500", "model": "gpt-4o"},
}
INGEST_EXAMPLES = [
    OpenApiExample("One event", value=EVENT_EXAMPLE, request_only=True),
    OpenApiExample(
        "The least to send",
        summary="No event_id or timestamp: the server generates the id, and the event is now.",
        value={
            "event_name": "llm.tokens",
            "external_customer_id": "user_42",
            "properties": {"tokens": 1500, "model": "gpt-4o"},
        },
        request_only=True,
    ),
    OpenApiExample(
        "Accepted",
        value={"message": "Event accepted for processing", "event_id": "evt_2026_11_27_0001"},
        response_only=True,
        status_codes=["202"],
    ),
]
BULK_EXAMPLES = [
    OpenApiExample(
        "Two events",
        value={"events": [EVENT_EXAMPLE, {**EVENT_EXAMPLE, "event_id": "evt_2026_11_27_0002"}]},
        request_only=True,
    ),
    OpenApiExample(
        "Accepted",
        value={"message": "Events accepted for processing", "accepted": "2", "duplicates": "0"},
        response_only=True,
        status_codes=["202"],
    ),
]
BATCH_EXAMPLES = [
    BULK_EXAMPLES[0],
    OpenApiExample(
        "A good event and one without its tokens",
        value={
            "events": [
                {**EVENT_EXAMPLE, "event_id": "evt_2026_11_27_0003"},
                {
                    **EVENT_EXAMPLE,
                    "event_id": "evt_2026_11_27_0004",
                    "properties": {"model": "gpt-4o"},
                },
            ]
        },
        request_only=True,
    ),
    OpenApiExample(
        "The good one stored and the bad one rejected",
        value={
            "accepted": 1,
            "duplicates": 0,
            "rejected": 1,
            "results": [
                {"index": 0, "event_id": "evt_2026_11_27_0003", "status": "accepted"},
                {
                    "index": 1,
                    "status": "rejected",
                    "reason": "property 'tokens' is missing (meter of 'llm_tokens')",
                },
            ],
        },
        response_only=True,
    ),
    OpenApiExample(
        "One stored, one already stored",
        value={
            "accepted": 1,
            "duplicates": 1,
            "rejected": 0,
            "results": [
                {"index": 0, "event_id": "evt_2026_11_27_0001", "status": "accepted"},
                {"index": 1, "event_id": "evt_2026_11_27_0002", "status": "duplicate"},
            ],
        },
        response_only=True,
    ),
]
EVENTS_PAGE_EXAMPLE = OpenApiExample(
    "Newest first",
    value={
        "events": [
            {
                "id": EVENT_EXAMPLE["event_id"],
                "event_name": EVENT_EXAMPLE["event_name"],
                "external_customer_id": EVENT_EXAMPLE["external_customer_id"],
                "source": EVENT_EXAMPLE["source"],
                "properties": EVENT_EXAMPLE["properties"],
                "timestamp": EVENT_EXAMPLE["timestamp"],
                "ingested_at": "2026-11-27T10:00:01Z",
            }
        ],
        "has_more": False,
        "offset": 0,
    },
    response_only=True,
)
USAGE_RESULT_EXAMPLE = OpenApiExample(
    "Daily usage",
    value={
        "event_name": "llm.tokens",
        "type": names.SUM,
        "value": "4500",
        "results": [
            {"window_size": "2026-11-26T00:00:00Z", "value": "3000"},
            {"window_size": "2026-11-27T00:00:00Z", "value": "1500"},
        ],
    },
    response_only=True,
)
USAGE_WINDOW_EXAMPLE = {
    "external_customer_id": "user_42",
    "start_time": "2026-11-26T00:00:00Z",
    "end_time": "2026-11-28T00:00:00Z",
    "window_size": "DAY",
}


class EventBulkView(APIView):
    """All or nothing: one bad event refuses the whole batch, naming each bad index."""

    @extend_schema(request=BulkIngestEvent, responses={202: BulkAccepted}, examples=BULK_EXAMPLES)
    def post(self, request):
        try:
            result = events_bulk_ingest(raws=event_list(request.data), now=timezone.now())
        except BulkRejected as refusal:
            return error_response(400, str(refusal), {"rejected": refusal.rejected})
        except EventRejected as refusal:
            return error_response(400, str(refusal))
        return Response(
            {
                "message": "Events accepted for processing",
                "accepted": str(len(result.stored)),
                "duplicates": str(result.duplicates),
            },
            status=status.HTTP_202_ACCEPTED,
        )


class EventBatchView(APIView):
    """Tally's partial batch: the valid events are stored, each event gets a result."""

    @extend_schema(request=BulkIngestEvent, responses={200: BatchResult}, examples=BATCH_EXAMPLES)
    def post(self, request):
        try:
            results = events_batch_ingest(raws=event_list(request.data), now=timezone.now())
        except EventRejected as refusal:
            return error_response(400, str(refusal))
        counts = {
            s: sum(r["status"] == s for r in results) for s in ("accepted", "duplicate", "rejected")
        }
        return Response(
            {
                "accepted": counts["accepted"],
                "duplicates": counts["duplicate"],
                "rejected": counts["rejected"],
                "results": results,
            }
        )


def event_json(event: Event) -> dict:
    return {
        "id": event.event_id,
        "event_name": event.event_name,
        "external_customer_id": event.external_customer_id,
        "source": event.source,
        "properties": event.properties,
        "timestamp": event.timestamp.isoformat().replace("+00:00", "Z"),
        "ingested_at": event.ingested_at.isoformat().replace("+00:00", "Z"),
    }


class PropertyFilters(serializers.DictField):
    """``{"key": ["value", ...]}``; in a query string ``property_filters.key=value``, repeated
    for more values (DRF's dict parsing keeps only the last value of a key)."""

    def get_value(self, dictionary):
        if not html.is_html_input(dictionary):
            return super().get_value(dictionary)
        prefix = f"{self.field_name}."
        found = {
            name.removeprefix(prefix): dictionary.getlist(name)
            for name in dictionary
            if name.startswith(prefix)
        }
        return found or empty

    def to_internal_value(self, data):
        filters = super().to_internal_value(data)
        if len(filters) > MAX_FILTER_KEYS:
            raise serializers.ValidationError(f"At most {MAX_FILTER_KEYS} property keys.")
        for key, values in filters.items():
            if not key or len(key) > 255 or "\x00" in key:
                raise serializers.ValidationError(
                    f"Property key {key[:40]!r} must be 1 to 255 characters, without NUL."
                )
            if len(values) > MAX_FILTER_VALUES:
                raise serializers.ValidationError(
                    f"At most {MAX_FILTER_VALUES} values for property {key!r}."
                )
        return filters


MAX_FILTER_KEYS = 20
MAX_FILTER_VALUES = 100


class EventQuery(serializers.Serializer):
    external_customer_id = serializers.CharField(required=False, max_length=255)
    event_name = serializers.CharField(required=False, max_length=255)
    event_id = serializers.CharField(required=False, max_length=255)
    source = serializers.CharField(required=False, max_length=255)
    start_time = Moment(required=False)
    end_time = Moment(required=False)
    property_filters = PropertyFilters(
        child=serializers.ListField(
            child=serializers.CharField(trim_whitespace=False, max_length=255)
        ),
        required=False,
    )
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=50)
    offset = serializers.IntegerField(required=False, min_value=0, max_value=MAX_OFFSET, default=0)
    order = serializers.ChoiceField(["asc", "desc"], required=False, default="desc")


def _events_matching(query: dict):
    events = Event.objects.all()
    for key in ("external_customer_id", "event_name", "event_id", "source"):
        if query.get(key):
            events = events.filter(**{key: query[key]})
    if query.get("start_time"):
        events = events.filter(timestamp__gte=query["start_time"])
    if query.get("end_time"):
        events = events.filter(timestamp__lt=query["end_time"])
    events = events_with_properties(events, filters=(query.get("property_filters") or {}).items())
    direction = "" if query.get("order") == "asc" else "-"
    return events.order_by(f"{direction}timestamp", f"{direction}id")


def events_page(data) -> Response:
    query = EventQuery(data=data)
    query.is_valid(raise_exception=True)
    q = query.validated_data
    page = list(_events_matching(q)[q["offset"] : q["offset"] + q["page_size"] + 1])
    return Response(
        {
            "events": [event_json(e) for e in page[: q["page_size"]]],
            "has_more": len(page) > q["page_size"],
            "offset": q["offset"],
        }
    )


class EventQueryView(APIView):
    """``POST /v1/events/query``: the SDK's event list, filtered by a JSON body."""

    @extend_schema(
        request=EventQuery,
        responses={200: EventsPage},
        examples=[
            OpenApiExample(
                "One customer's tokens",
                value={"external_customer_id": "user_42", "event_name": "llm.tokens"},
                request_only=True,
            ),
            EVENTS_PAGE_EXAMPLE,
        ],
    )
    def post(self, request):
        return events_page(request.data)


WINDOW_CHOICES = sorted(selectors.WINDOW_SIZES)


class UsageWindow(serializers.Serializer):
    external_customer_id = serializers.CharField(required=False, max_length=255)
    customer_id = serializers.CharField(required=False, max_length=40)
    start_time = Moment(required=False)
    end_time = Moment(required=False)
    window_size = serializers.ChoiceField(WINDOW_CHOICES, required=False)

    def validate(self, data):
        if not data.get("external_customer_id"):
            customer = Customer.objects.filter(pk=data.get("customer_id") or "").first()
            if customer is None:
                raise serializers.ValidationError(
                    {"external_customer_id": "Give external_customer_id or a known customer_id."}
                )
            data["external_customer_id"] = customer.external_id
        data.setdefault("end_time", timezone.now())
        data.setdefault("start_time", data["end_time"] - timedelta(days=7))
        if data["start_time"] >= data["end_time"]:
            raise serializers.ValidationError({"end_time": "end_time must be after start_time."})
        return data


class UsageByMeterRequest(UsageWindow):
    meter_id = serializers.CharField(max_length=40)


class UsageRequest(UsageWindow):
    event_name = serializers.CharField(max_length=255)
    aggregation_type = serializers.ChoiceField(Meter.Aggregation.values)
    property_name = serializers.CharField(required=False, allow_blank=True, max_length=255)
    multiplier = serializers.DecimalField(
        max_digits=28, decimal_places=12, required=False, allow_null=True
    )
    filters = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField(), allow_empty=False),
        required=False,
    )


def _usage_response(meter, query, use_rollups=True) -> Response:
    window = {
        "meter": meter,
        "external_customer_id": query["external_customer_id"],
        "start": query["start_time"],
        "end": query["end_time"],
        "use_rollups": use_rollups,
    }
    value = selectors.meter_usage(**window)
    results = []
    if query.get("window_size"):
        results = [
            {"window_size": start.isoformat().replace("+00:00", "Z"), "value": format(v, "f")}
            for start, v in selectors.meter_usage_windows(
                **window, window_size=query["window_size"]
            )
        ]
    return Response(
        {
            "event_name": meter.event_name,
            "type": meter.aggregation,
            "value": format(value, "f"),
            "results": results,
        }
    )


class UsageByMeterView(APIView):
    @extend_schema(
        request=UsageByMeterRequest,
        responses={200: UsageResult, 404: documented_error(404)},
        examples=[
            OpenApiExample(
                "Usage of one meter by day",
                value={"meter_id": "meter_01JD7X8Y9Z", **USAGE_WINDOW_EXAMPLE},
                request_only=True,
            ),
            USAGE_RESULT_EXAMPLE,
        ],
    )
    def post(self, request):
        query = UsageByMeterRequest(data=request.data)
        query.is_valid(raise_exception=True)
        meter = Meter.objects.filter(pk=query.validated_data["meter_id"]).first()
        if meter is None:
            return error_response(404, "No meter with that meter_id.")
        return _usage_response(meter, query.validated_data)


class UsageView(APIView):
    """Ad-hoc usage for any event name and aggregation, read from raw events."""

    @extend_schema(
        request=UsageRequest,
        responses={200: UsageResult},
        examples=[
            OpenApiExample(
                "Ad-hoc sum of a property",
                value={
                    "event_name": "llm.tokens",
                    "aggregation_type": names.SUM,
                    "property_name": "tokens",
                    "filters": {"model": ["gpt-4o"]},
                    **USAGE_WINDOW_EXAMPLE,
                },
                request_only=True,
            ),
            USAGE_RESULT_EXAMPLE,
        ],
    )
    def post(self, request):
        query = UsageRequest(data=request.data)
        query.is_valid(raise_exception=True)
        q = query.validated_data
        meter = SimpleNamespace(
            pk=None,
            event_name=q["event_name"],
            aggregation=q["aggregation_type"],
            field=q.get("property_name") or "",
            multiplier=q.get("multiplier"),
            filters=[{"key": k, "values": v} for k, v in (q.get("filters") or {}).items()],
        )
        validate_meter(
            aggregation=meter.aggregation,
            field=meter.field,
            multiplier=meter.multiplier,
            filters=meter.filters,
        )
        return _usage_response(meter, q, use_rollups=False)


class EventIngestView(APIView):
    """``POST /v1/events`` ingests one event; ``GET /v1/events`` lists them."""

    @extend_schema(
        parameters=[EventQuery], responses={200: EventsPage}, examples=[EVENTS_PAGE_EXAMPLE]
    )
    def get(self, request):
        return events_page(request.query_params)

    @extend_schema(request=IngestEvent, responses={202: EventAccepted}, examples=INGEST_EXAMPLES)
    def post(self, request):
        try:
            event = event_parse(request.data, meters=meters_by_event_name(), now=timezone.now())
        except EventRejected as error:
            return error_response(400, str(error), {"event": str(error)})
        single_events.submit(event)
        return Response(
            {"message": "Event accepted for processing", "event_id": event.event_id},
            status=status.HTTP_202_ACCEPTED,
        )


urlpatterns = [
    path("events", EventIngestView.as_view(), name="events"),
    path("events/bulk", EventBulkView.as_view(), name="events-bulk"),
    path("events/batch", EventBatchView.as_view(), name="events-batch"),
    path("events/query", EventQueryView.as_view(), name="events-query"),
    path("events/usage/meter", UsageByMeterView.as_view(), name="usage-by-meter"),
    path("events/usage", UsageView.as_view(), name="usage"),
]
