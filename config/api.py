"""API plumbing shared by every app: the error shape, pagination and the API key check."""

import json
import math

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from config.bounds import MAX_LIMIT, MAX_OFFSET

CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "already_exists",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "too_many_requests",
}


def error_body(status_code: int, message: str, details=None, code: str | None = None) -> dict:
    """DESIGN.md's ``{"error": {...}}``, with the same keys on top for the Flexprice SDK."""
    error = {
        "code": code or CODES.get(status_code, "error"),
        "message": message,
        "http_status_code": status_code,
        "details": details or {},
    }
    return {"error": error, **{k: error[k] for k in ("code", "message", "http_status_code")}}


def error_response(status_code: int, message: str, details=None, code=None) -> Response:
    return Response(error_body(status_code, message, details, code), status=status_code)


def _first_message(detail) -> str:
    if isinstance(detail, dict):
        for key, value in detail.items():
            text = _first_message(value)
            return text if key == "non_field_errors" else f"{key}: {text}"
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail)


def _django_detail(exc: DjangoValidationError, names: dict[str, str]) -> dict:
    """A service's errors under wire names: ``names`` renames model fields, and dots nest."""
    if not hasattr(exc, "error_dict"):
        return {"non_field_errors": exc.messages}
    names = {"__all__": "non_field_errors", **names}
    detail: dict = {}
    for key, messages in exc.message_dict.items():
        *parents, leaf = names.get(key, key).split(".")
        node = detail
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = messages
    return detail


def _is_duplicate(exc: DjangoValidationError) -> bool:
    errors = [e for field in getattr(exc, "error_dict", {}).values() for e in field]
    return bool(errors) and all(e.code == "unique" for e in errors)


def api_exception_handler(exc, context):
    """Every error in the one shape. A view's ``error_names`` maps model to wire field names."""
    from rest_framework.views import exception_handler  # at module level it is circular

    code = None
    if isinstance(exc, DjangoValidationError):
        code = "already_exists" if _is_duplicate(exc) else None
        names = getattr(context.get("view"), "error_names", {})
        exc = exceptions.ValidationError(_django_detail(exc, names))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    response = exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    if isinstance(exc, exceptions.ValidationError):
        message = _first_message(detail)
        details = detail if isinstance(detail, dict) else {"non_field_errors": detail}
    else:
        message = str(detail.get("detail", detail)) if isinstance(detail, dict) else str(detail)
        details = {}
    response.data = error_body(response.status_code, message, details, code)
    return response


class Pagination(LimitOffsetPagination):
    """``limit`` 1 to 1,000 and ``offset`` 0 to 1,000,000; anything else is a 400 naming it."""

    default_limit = 50
    max_limit = MAX_LIMIT

    def get_limit(self, request):
        return _bounded(request, self.limit_query_param, self.default_limit, 1, MAX_LIMIT)

    def get_offset(self, request):
        return _bounded(request, self.offset_query_param, 0, 0, MAX_OFFSET)

    def get_paginated_response(self, data):
        return Response(
            {
                "items": data,
                "pagination": {"total": self.count, "limit": self.limit, "offset": self.offset},
            }
        )

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "properties": {
                "items": schema,
                "pagination": {
                    "type": "object",
                    "properties": {
                        "total": {"type": "integer"},
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                    },
                },
            },
        }


def _bounded(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise exceptions.ValidationError(
            {name: [f"{name} must be a whole number from {low} to {high:,}."]}
        )
    return int(raw)


@csrf_exempt
def not_found(request, *args, **kwargs):
    """Unknown paths under /v1/ answer JSON, not Django's HTML page."""
    return JsonResponse(error_body(404, f"No API endpoint at {request.path}."), status=404)


def _is_api(request) -> bool:
    return request.path == "/v1" or request.path.startswith("/v1/")


def page_not_found(request, exception=None):
    """Django's 404 page, except under /v1, which answers the error shape."""
    if _is_api(request):
        return not_found(request)
    return defaults.page_not_found(request, exception)


def bad_request(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body(400, "The request is malformed."), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if _is_api(request):
        return JsonResponse(error_body(403, "Permission denied."), status=403)
    return defaults.permission_denied(request, exception)


def server_error(request):
    if _is_api(request):
        body = error_body(500, "Internal server error.", code="internal_error")
        return JsonResponse(body, status=500)
    return defaults.server_error(request)


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."


class JSONParser(BaseParser):
    """JSON with a size cap, and a 400 (never a 500) for any body that is not JSON."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        length = request.META.get("CONTENT_LENGTH") if request is not None else None
        if length and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        state = _Numbers()
        try:
            data = json.loads(
                body.decode("utf-8"), parse_float=state.parse_float, parse_constant=state.constant
            )
        except (ValueError, RecursionError) as error:
            raise exceptions.ParseError(f"The body is not valid JSON: {error}") from None
        if state.unfit:
            path, text = _first_unfit(data)
            raise exceptions.ValidationError(
                {
                    path or "body": [
                        f"The number {text} does not fit a 64-bit float; send it as a string."
                    ]
                }
            )
        return data


class _Unfit(float):
    """A JSON number a float cannot hold (1e400, NaN): refused, never stored changed."""

    def __new__(cls, text):
        value = super().__new__(cls, "nan")
        value.text = text
        return value


class _Numbers:
    """JSON number hooks that remember whether any number did not fit."""

    __slots__ = ("unfit",)

    def __init__(self):
        self.unfit = False

    def parse_float(self, text: str) -> float:
        value = float(text)
        if math.isfinite(value):
            return value
        self.unfit = True
        return _Unfit(text)

    def constant(self, name: str):
        self.unfit = True
        return _Unfit(name)


def _first_unfit(value, path: str = "") -> tuple[str, str] | None:
    """The dotted path (``events.3.properties.tokens``) and text of the first unfit number."""
    if isinstance(value, _Unfit):
        return path, value.text
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _first_unfit(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None
