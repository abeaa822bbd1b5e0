"""Events and usage under /v1/events, in Flexprice's wire format.

Ingestion is hand-parsed rather than run through serializers: it is the hot path.
"""

from datetime import timedelta
from types import SimpleNamespace

from django.urls import path
from django.utils import timezone
from drf_spectacular.utils import OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.fields import empty
from rest_framework.response import Response
from rest_framework.utils import html
from rest_framework.views import APIView

from catalog.models import Meter
from catalog.validation import validate_meter
from config.api import error_response
from config.bounds import MAX_OFFSET, Moment
from metering import selectors
from metering.ingestion import (
    MAX_BATCH,
    EventRejected,
    event_parse,
    events_ingest,
    meters_by_event_name,
    single_events,
)
from metering.matching import events_with_properties
from metering.models import Customer, Event


def _parse_all(items, meters, now):
    """Each item parsed, or the reason it was rejected, in order."""
    parsed = []
    for raw in items:
        try:
            parsed.append(event_parse(raw, meters=meters, now=now))
        except EventRejected as error:
            parsed.append(error)
    return parsed


def _event_list(data):
    events = data.get("events") if isinstance(data, dict) else None
    if not isinstance(events, list) or not events:
        return None, 'Send {"events": [...]} with 1 to 1000 events.'
    if len(events) > MAX_BATCH:
        return None, f"A batch holds at most {MAX_BATCH} events; this one has {len(events)}."
    return events, None


class EventBulkView(APIView):
    """All or nothing: one bad event refuses the whole batch, naming each bad index."""

    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
    def post(self, request):
        events, problem = _event_list(request.data)
        if problem:
            return error_response(400, problem)
        parsed = _parse_all(events, meters_by_event_name(), timezone.now())
        rejected = [
            {"index": i, "reason": str(p)} for i, p in enumerate(parsed) if isinstance(p, Exception)
        ]
        if rejected:
            first = rejected[0]
            message = (
                f"{len(rejected)} of {len(events)} events are invalid; none were stored. "
                f"Event {first['index']}: {first['reason']}"
            )
            return error_response(400, message, {"rejected": rejected})
        result = events_ingest(events=parsed)
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

    @extend_schema(request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        events, problem = _event_list(request.data)
        if problem:
            return error_response(400, problem)
        parsed = _parse_all(events, meters_by_event_name(), timezone.now())
        good = [p for p in parsed if not isinstance(p, Exception)]
        stored_ids = {e.event_id for e in events_ingest(events=good).stored}
        results, seen = [], set()
        for index, item in enumerate(parsed):
            if isinstance(item, Exception):
                results.append({"index": index, "status": "rejected", "reason": str(item)})
                continue
            fresh = item.event_id in stored_ids and item.event_id not in seen
            seen.add(item.event_id)
            results.append(
                {
                    "index": index,
                    "event_id": item.event_id,
                    "status": "accepted" if fresh else "duplicate",
                }
            )
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

    @extend_schema(request=EventQuery, responses={200: OpenApiTypes.OBJECT})
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
    @extend_schema(request=UsageByMeterRequest, responses={200: OpenApiTypes.OBJECT})
    def post(self, request):
        query = UsageByMeterRequest(data=request.data)
        query.is_valid(raise_exception=True)
        meter = Meter.objects.filter(pk=query.validated_data["meter_id"]).first()
        if meter is None:
            return error_response(404, "No meter with that meter_id.")
        return _usage_response(meter, query.validated_data)


class UsageView(APIView):
    """Ad-hoc usage for any event name and aggregation, read from raw events."""

    @extend_schema(request=UsageRequest, responses={200: OpenApiTypes.OBJECT})
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

    @extend_schema(parameters=[EventQuery], responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return events_page(request.query_params)

    @extend_schema(request=OpenApiTypes.OBJECT, responses={202: OpenApiTypes.OBJECT})
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
