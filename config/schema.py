"""What ``/v1/schema/`` says beyond the serializers: the error answers every operation can give.

Every API view is documented by this AutoSchema. It adds, to each operation, the 4xx
answers it can give, all with the one ``ErrorResponse`` shape of ``config.api.error_body``:

- 400 when the operation reads a body or query parameters, or declares it in
  ``extend_schema(responses=...)``;
- 401 when it needs an API key;
- 404 when its path names a row;
- 413 and 415 when it reads a body;
- 429 when the view is throttled.

A 405 belongs to a method a path does not have, so no operation can document it.
"""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from rest_framework import serializers

BODY_METHODS = ("POST", "PUT", "PATCH")

DESCRIPTIONS = {
    400: "The request is invalid; ``details`` names each bad field.",
    401: "The x-api-key header is missing or unknown.",
    404: "Nothing has that id.",
    413: "The body is larger than the server accepts.",
    415: "The body is not application/json.",
    429: "Too many requests; retry later.",
}


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(help_text='A stable code, such as "validation_error".')
    message = serializers.CharField(help_text="What went wrong, for a person.")
    http_status_code = serializers.IntegerField()
    details = serializers.DictField(
        child=serializers.JSONField(),
        help_text="Per field, its messages; for a refused batch, ``rejected``. May be empty.",
    )


class ErrorResponseSerializer(serializers.Serializer):
    """``{"error": {...}}``, with its code, message and status repeated on top for the SDK."""

    error = ErrorSerializer()
    code = serializers.CharField()
    message = serializers.CharField()
    http_status_code = serializers.IntegerField()

    class Meta:
        ref_name = "ErrorResponse"


def error_example(status: int) -> OpenApiExample:
    from config.api import CODES, error_body  # config.api imports views; keep this lazy

    details = {"name": ["This field is required."]} if status == 400 else {}
    message = "name: This field is required." if status == 400 else DESCRIPTIONS[status]
    return OpenApiExample(
        CODES[status],
        value=error_body(status, message, details),
        status_codes=[str(status)],
        response_only=True,
    )


def error_response(status: int) -> OpenApiResponse:
    return OpenApiResponse(
        ErrorResponseSerializer, description=DESCRIPTIONS[status], examples=[error_example(status)]
    )


class AutoSchema(SpectacularAutoSchema):
    def _error_statuses(self) -> list[int]:
        statuses = []
        reads_body = self.method in BODY_METHODS
        if reads_body or self._get_filter_parameters() or self.get_override_parameters():
            statuses.append(400)
        if self.view.get_permissions():
            statuses.append(401)
        if "{" in self.path:
            statuses.append(404)
        if reads_body:
            statuses += [413, 415]
        if self.view.get_throttles():
            statuses.append(429)
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            responses.setdefault(
                str(status), self._get_response_for_code(error_response(status), str(status))
            )
        return responses
