"""The API's conventions: error envelope, request ids, clean 4xx, OpenAPI kept true."""

import logging

import falcon.inspect
import falcon.testing
import peewee
import pytest

REQUIRED_ERROR_KEYS = {"type", "code", "message", "request_id"}


@pytest.fixture
def config(config):
    config.plugins.modules = ["support.demo_plugin"]  # its route must be documented too
    return config


def assert_error(resp, status, code):
    assert resp.status_code == status, resp.text
    error = resp.json["error"]
    assert set(error) == REQUIRED_ERROR_KEYS
    assert error["code"] == code
    assert error["request_id"] == resp.headers["x-request-id"]
    assert "Traceback" not in resp.text
    return error


def test_healthz_reports_database_and_schema(client):
    resp = client.simulate_get("/healthz")
    assert resp.status_code == 200
    assert resp.json["status"] == "ok"
    assert resp.json["database"]["ok"] is True and resp.json["database"]["schema_version"] >= 1
    assert resp.headers["x-request-id"].startswith("req_")


def test_healthz_503_when_database_unreachable(client, monkeypatch):
    def broken(*args, **kwargs):
        raise peewee.OperationalError("unable to open database file")

    monkeypatch.setattr("postern.api.health.health_snapshot", broken)
    resp = client.simulate_get("/healthz")
    assert resp.status_code == 503 and resp.headers["retry-after"] == "5"
    assert resp.json["status"] == "unavailable" and resp.json["database"]["ok"] is False


def test_every_response_has_a_distinct_request_id(client):
    ids = {client.simulate_get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_unknown_route_is_a_404_envelope(client):
    error = assert_error(client.simulate_get("/v1/nothing-here"), 404, "not_found")
    assert error["type"] == "not_found_error" and "/v1/nothing-here" in error["message"]


def test_wrong_method_is_a_405_envelope(client):
    assert_error(client.simulate_delete("/healthz"), 405, "method_not_allowed")


def test_json_body_roundtrip(client):
    resp = client.simulate_post("/v1/demo/echo", json={"a": [1, 2]})
    assert resp.status_code == 200 and resp.json == {"echo": {"a": [1, 2]}}


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"body": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
        ({"body": b"\xff\xfe", "headers": {"Content-Type": "application/json"}}, 400, "malformed_json"),
        ({"body": "[1, 2]", "headers": {"Content-Type": "application/json"}}, 422, "invalid_body"),
        ({"body": "", "headers": {"Content-Type": "application/json"}}, 422, "invalid_body"),
        ({"body": '{"a": 1}', "headers": {"Content-Type": "text/plain"}}, 415, "unsupported_media_type"),
        ({"body": '{"a": 1}'}, 415, "unsupported_media_type"),
        ({"json": {"a": "x" * 2000}}, 413, "payload_too_large"),
    ],
)
def test_bad_bodies_get_clean_4xx(client, kwargs, status, code):
    assert_error(client.simulate_post("/v1/demo/echo", **kwargs), status, code)


def test_unexpected_error_is_a_bare_500_logged_without_secrets(client, caplog):
    with caplog.at_level(logging.ERROR, logger="postern.api"):
        resp = client.simulate_get("/v1/demo/boom")
    error = assert_error(resp, 500, "internal_error")
    assert error["type"] == "api_error" and "kaboom" not in resp.text
    record = next(r for r in caplog.records if "unhandled error" in r.getMessage())
    assert error["request_id"] in record.getMessage()
    assert record.exc_info is not None


def test_openapi_documents_every_served_route_and_method(client):
    app = client.app
    doc = client.simulate_get("/v1/openapi.json").json
    assert doc["openapi"].startswith("3.1")
    served = {}
    for route in falcon.inspect.inspect_routes(app):
        if route.path.startswith("/console") or route.path == "/metrics":
            continue  # the console's HTML pages and the Prometheus scrape: not the JSON API
        methods = {m.method.lower() for m in route.methods if m.internal is False and m.method != "OPTIONS"}
        served[route.path] = methods
    documented = {path: set(item) for path, item in doc["paths"].items()}
    assert served == documented
    for item in doc["paths"].values():
        for op in item.values():
            assert op["summary"] and "default" in op["responses"]
