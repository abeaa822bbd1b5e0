"""``/v1/schema/`` describes what Tally sends and answers (DESIGN.md: the schema tells the
truth). The live check is test_schemathesis.py; these pin the lies once published."""

import re

import pytest

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from drf_spectacular.generators import SchemaGenerator

    with django_db_blocker.unblock():
        return SchemaGenerator().get_schema(request=None, public=True)


def component(schema, name):
    return schema["components"]["schemas"][name]


def operations(schema):
    for path, item in schema["paths"].items():
        for method in METHODS:
            if method in item:
                yield f"{method.upper()} {path}", item[method]


def body_schema(schema, operation, status=None):
    content = (operation["requestBody"] if status is None else operation["responses"][status])[
        "content"
    ]["application/json"]
    ref = content["schema"].get("$ref")
    return component(schema, ref.rsplit("/", 1)[1]) if ref else content["schema"]


def test_invoice_metadata_is_an_object_of_strings(schema):
    metadata = component(schema, "Invoice")["properties"]["metadata"]
    assert metadata["type"] == "object"
    assert metadata["additionalProperties"] == {"type": "string"}


def test_customer_email_accepts_the_empty_string_it_answers(schema):
    email = component(schema, "Customer")["properties"]["email"]
    assert email["type"] == "string"
    assert "format" not in email


def test_constants_are_typed_by_the_value_they_answer(schema):
    invoice = component(schema, "Invoice")["properties"]
    ref = invoice["invoice_type"]["allOf"][0]["$ref"]
    assert component(schema, ref.rsplit("/", 1)[1])["enum"] == ["SUBSCRIPTION", "CREDIT"]
    assert re.fullmatch(invoice["amount_paid"]["pattern"], "0.00")


@pytest.mark.parametrize("field", ["subtotal", "total", "amount_due", "amount_remaining"])
def test_invoice_amounts_are_decimal_strings(schema, field):
    amount = component(schema, "Invoice")["properties"][field]
    assert amount["type"] == "string"
    assert re.fullmatch(amount["pattern"], "202.50")
    assert not re.fullmatch(amount["pattern"], "2.025E+2")


def test_price_amounts_are_decimal_strings(schema):
    price = component(schema, "Price")["properties"]
    assert price["amount"]["type"] == "string"
    assert "pattern" in price["free_units"]


def test_every_operation_documents_a_4xx_with_the_error_shape(schema):
    error_ref = "#/components/schemas/ErrorResponse"
    missing = []
    for label, operation in operations(schema):
        errors = {
            status: response
            for status, response in operation["responses"].items()
            if status.startswith("4")
        }
        if not errors or any(
            r["content"]["application/json"]["schema"]["$ref"] != error_ref for r in errors.values()
        ):
            missing.append(label)
    assert not missing
    error = component(schema, "ErrorResponse")["properties"]
    assert set(error) >= {"error", "code", "message", "http_status_code"}


def test_posts_document_bad_bodies_and_ids_document_not_found(schema):
    for label, operation in operations(schema):
        responses = operation["responses"]
        assert "401" in responses, label
        if label.startswith("POST"):
            assert {"400", "413", "415"} <= set(responses), label
        if "{id}" in label:
            assert "404" in responses, label


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/bulk", "/v1/events/batch"])
def test_event_ingestion_bodies_have_properties(schema, path):
    operation = schema["paths"][path]["post"]
    request = body_schema(schema, operation)
    assert request["properties"]
    status = "200" if path.endswith("batch") else "202"
    assert body_schema(schema, operation, status)["properties"]


def test_single_event_body_names_each_field(schema):
    event = component(schema, "IngestEventRequest")
    assert set(event["properties"]) == {
        "event_name",
        "external_customer_id",
        "event_id",
        "source",
        "timestamp",
        "properties",
    }
    assert set(event["required"]) == {"event_name", "external_customer_id"}


def test_bulk_answer_is_all_strings_for_the_sdk(schema):
    answer = body_schema(schema, schema["paths"]["/v1/events/bulk"]["post"], "202")
    assert {field["type"] for field in answer["properties"].values()} == {"string"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/events",
        "/v1/events/bulk",
        "/v1/events/batch",
        "/v1/events/usage/meter",
        "/v1/events/usage",
        "/v1/invoices/preview",
    ],
)
def test_ingestion_usage_and_preview_carry_examples(schema, path):
    operation = schema["paths"][path]["post"]
    assert operation["requestBody"]["content"]["application/json"]["examples"]
    success = next(s for s in operation["responses"] if s.startswith("2"))
    assert operation["responses"][success]["content"]["application/json"]["examples"]


def test_every_operation_has_an_example_answer(schema):
    missing = [
        label
        for label, operation in operations(schema)
        if set(operation["responses"]) & {"200", "201", "202"}
        and not any(
            "examples" in response["content"]["application/json"]
            for status, response in operation["responses"].items()
            if status.startswith("2") and status != "204"  # No Content has no body
        )
    ]
    assert not missing


def test_no_response_is_a_free_form_object(schema):
    def described(body):  # a list of wallets is a plain array, as the SDK reads it
        return "$ref" in body or "properties" in body or "$ref" in body.get("items", {})

    free = [
        label
        for label, operation in operations(schema)
        for status, response in operation["responses"].items()
        if status.startswith("2")
        and status != "204"
        and not described(response["content"]["application/json"]["schema"])
    ]
    assert not free


def _json_schema(node):
    """OpenAPI 3.0's ``nullable`` as JSON Schema, so examples validate as answers would."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _json_schema(value) for key, value in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


def test_every_example_matches_its_schema(schema):
    import jsonschema_rs

    components = _json_schema(schema["components"])
    wrong = []
    for label, operation in operations(schema):
        bodies = [("request", operation.get("requestBody", {}))]
        bodies += list(operation["responses"].items())
        for status, body in bodies:
            content = body.get("content", {}).get("application/json", {})
            if not content.get("examples"):
                continue
            validator = jsonschema_rs.Draft7Validator(
                {**_json_schema(content["schema"]), "components": components}
            )
            for name, example in content["examples"].items():
                for error in validator.iter_errors(example["value"]):
                    wrong.append(f"{label} {status} {name}: {error.message}")
    assert not wrong, "\n".join(wrong)
