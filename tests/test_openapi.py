"""The OpenAPI document: served only when asked for, in step with the blueprint's routes,
and every answer of the endpoints matches it (schemathesis, through the WSGI app with
the stand-in behind it; ``.ci/run`` runs the schemathesis CLI against a live server too)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from flask import Flask
from helpers import AppFactory
from hypothesis import HealthCheck, given, settings

from flask_plurality.openapi import OPENAPI_VERSION, document
from flask_plurality.testing import FakePlurality

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
#: What "every answer matches the document" means: no 500, statuses, content types,
#: headers and bodies as documented.
CONFORMANCE = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]
#: ... and, for generated requests, that a request the document allows is accepted and
#: one it does not is refused (``.ci/run`` runs every check schemathesis has).
GENERATED = [
    *CONFORMANCE,
    schemathesis.checks.positive_data_acceptance,
    schemathesis.checks.negative_data_rejection,
    schemathesis.checks.missing_required_header,
]


def routes_of_the_blueprint(app: Flask, prefix: str) -> set[tuple[str, str]]:
    """(path as OpenAPI writes it, method) for every route the blueprint registered."""
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "plurality" or rule.endpoint.startswith("plurality.wrong_method"):
            continue  # another blueprint's, or the 405 to a method the path does not take
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule.removeprefix(prefix))
        for method in rule.methods or ():
            if method not in ("HEAD", "OPTIONS"):  # Flask adds these to every route
                found.add((path, method.lower()))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}


@pytest.mark.parametrize("prefix", ["/plurality", "/auth/v1"])
def test_the_document_and_the_routes_are_in_step(make_app: AppFactory, prefix: str) -> None:
    app = make_app(PLURALITY_URL_PREFIX=prefix, PLURALITY_OPENAPI=True)
    served = app.test_client().get(f"{prefix}/openapi.json").get_json()
    assert routes_of_the_blueprint(app, prefix) == documented(served)
    assert served["servers"][0]["url"] == prefix


def test_a_method_a_path_does_not_list_is_a_json_405_with_allow(make_app: AppFactory) -> None:
    """The document says so once (its description); each path's ``Allow``, in the 405
    and in the answer to ``OPTIONS``, lists exactly what the document lists for it."""
    app = make_app(PLURALITY_OPENAPI=True)
    client = app.test_client()
    doc = document()
    assert "405 `method_not_allowed`" in doc["info"]["description"]
    for path, item in doc["paths"].items():
        listed = {method.upper() for method in item if method in METHODS}
        expected = listed | {"OPTIONS"} | ({"HEAD"} if "GET" in listed else set())
        options = client.open(f"/plurality{path}", method="OPTIONS")
        assert set(options.headers["Allow"].split(", ")) == expected, path
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - listed):
            response = client.open(f"/plurality{path}", method=method, headers={"Origin": "http://localhost"})
            assert response.status_code == 405, (method, path)
            assert response.get_json() == {"error": "method_not_allowed", "message": f"Use {sorted(listed)[0]}."}
            assert set(response.headers["Allow"].split(", ")) == expected


def test_every_documented_operation_has_an_id_and_every_status_a_description() -> None:
    doc = document()
    operations = [op for item in doc["paths"].values() for m, op in item.items() if m in METHODS]
    ids = [op["operationId"] for op in operations]
    assert len(ids) == len(set(ids))
    for op in operations:
        assert op["responses"]
        for status, answer in op["responses"].items():
            assert re.fullmatch(r"[1-5]\d\d", status) and answer["description"]


def test_it_is_an_openapi_3_1_document_schemathesis_can_load() -> None:
    doc = document("/plurality")
    assert doc["openapi"] == OPENAPI_VERSION == "3.1.0"
    schema = schemathesis.openapi.from_dict(doc)
    assert {op.ok().path for op in schema.get_all_operations()} == set(doc["paths"])


def test_it_is_not_served_unless_asked_for(app: Flask) -> None:
    response = app.test_client().get("/plurality/openapi.json")
    assert response.status_code == 404
    assert response.get_json() == {"error": "not_found", "message": "Not found."}


@pytest.mark.parametrize("value", [True, "true", "1", "on"])
def test_served_when_on_as_json_from_any_flag_spelling(make_app: AppFactory, value: Any) -> None:
    response = make_app(PLURALITY_OPENAPI=value).test_client().get("/plurality/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["openapi"] == "3.1.0"


def test_the_setting_is_checked_at_init_app(make_app: AppFactory) -> None:
    from flask_plurality import ConfigurationError

    with pytest.raises(ConfigurationError, match="PLURALITY_OPENAPI"):
        make_app(PLURALITY_OPENAPI="maybe")


def exercise(operation: Any, examples: int = 25) -> set[int]:
    """Send ``examples`` generated requests to ``operation``; the statuses answered."""
    seen: set[int] = set()

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def conforms(case: Any) -> None:
        seen.add(case.call_and_validate(checks=GENERATED).status_code)

    conforms()
    return seen


def test_every_answer_matches_the_document(fake: FakePlurality, make_app: AppFactory) -> None:
    """Generated requests for every documented operation, through the app as it serves
    the document (demo mode: /fake/token mints tokens, the stand-in answers /login)."""
    app = make_app(PLURALITY_OPENAPI=True, PLURALITY_FAKE=True, PLURALITY_LOGIN_MAX_FAILURES=10**6)
    schema = schemathesis.openapi.from_wsgi("/plurality/openapi.json", app)
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        statuses[operation.label] = exercise(operation)
    assert set(statuses) == {op.ok().label for op in schema.get_all_operations()}
    assert 401 in statuses["POST /login"]  # generated tokens are junk
    assert 200 in statuses["POST /fake/token"]

    # And the good path, which random tokens never reach: a minted token logs in.
    login = schema["/login"]["POST"]
    token = app.test_client().post("/plurality/fake/token", json={}).get_json()["pluralityToken"]
    answer = login.Case(body={"token": token}, media_type="application/json").call_and_validate(checks=CONFORMANCE)
    assert answer.status_code == 200
    session = schema["/session"]["GET"].Case().call_and_validate(checks=CONFORMANCE)
    assert session.status_code == 401  # a new client: no cookie


def test_not_configured_matches_the_document(fake: FakePlurality, make_app: AppFactory) -> None:
    """Without a client secret a login is a 503 ``not_configured`` without Retry-After: documented."""
    app = make_app(PLURALITY_OPENAPI=True, PLURALITY_CLIENT_SECRET=None)
    schema = schemathesis.openapi.from_wsgi("/plurality/openapi.json", app)
    login = schema["/login"]["POST"]
    case = login.Case(body={"token": fake.issue_token()}, media_type="application/json")
    documented_503 = [check for check in CONFORMANCE if check is not schemathesis.checks.not_a_server_error]
    answer = case.call_and_validate(checks=documented_503)
    assert answer.status_code == 503
    assert answer.json()["error"] == "not_configured"
    assert "Retry-After" not in answer.headers
    assert "not_configured" in document()["paths"]["/login"]["post"]["responses"]["503"]["description"]
    assert fake.calls == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/login", {"token": ""}, 400),  # an empty token: the document's minLength says so too
        ("/login", {"token": "not-a-jwt"}, 401),
        ("/fake/token", {"email": None}, 400),  # leave it out for the default
        ("/fake/token", ["demo@example.com"], 400),
        ("/fake/token", {"email": ""}, 200),
        ("/fake/token", {}, 200),
    ],
)
def test_what_the_document_allows_is_what_is_accepted(
    fake: FakePlurality, make_app: AppFactory, path: str, body: Any, status: int
) -> None:
    app = make_app(PLURALITY_OPENAPI=True, PLURALITY_FAKE=True)
    schema = schemathesis.openapi.from_wsgi("/plurality/openapi.json", app)
    case = schema[path]["POST"].Case(body=body, media_type="application/json", headers={"Origin": "http://localhost"})
    answer = case.call_and_validate(checks=CONFORMANCE)
    assert answer.status_code == status, answer.text
    request_schema = schema[path]["POST"].definition.raw["requestBody"]["content"]["application/json"]["schema"]
    resolved = schema.raw_schema["components"]["schemas"][request_schema["$ref"].rsplit("/", 1)[1]]
    # The document's own verdict on the body (jsonschema_rs: what schemathesis validates with).
    assert jsonschema_rs.Draft202012Validator(resolved).is_valid(body) is (status != 400)
