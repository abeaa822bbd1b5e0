def assert_error(response, status: int, *field: str) -> dict:
    """The API's error shape with ``status``; ``field`` is a path into ``error.details``."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    error = body["error"]
    assert error["http_status_code"] == body["http_status_code"] == status
    assert error["code"] == body["code"] and error["message"] == body["message"]
    assert body["message"]
    details = error["details"]
    for key in field:
        assert key in details, (key, error)
        details = details[key]
    return body
