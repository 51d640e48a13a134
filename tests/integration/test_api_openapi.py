"""The OpenAPI document tells every answer (RELIABILITY S1); edges schemathesis found."""

from __future__ import annotations

from typing import Any

PROBLEM = "application/problem+json"


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, operation)
            for path, operations in document["paths"].items()
            for method, operation in operations.items()]


def test_every_error_answer_in_the_document_is_a_problem(client):
    document = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert list(response["content"]) == [PROBLEM], (method, path, status)
                assert response["content"][PROBLEM]["schema"] == {
                    "$ref": "#/components/schemas/Problem"}, (method, path, status)


def test_authenticated_operations_document_401_403_and_the_bearer_scheme(client):
    document = client.get("/openapi.json").json()
    for method, path, operation in _operations(document):
        if path.endswith("/auth/login"):
            assert "security" not in operation
            continue
        assert operation["security"] == [{"bearer": []}], (method, path)
        assert {"401", "403"} <= operation["responses"].keys(), (method, path)


def test_a_create_links_to_the_operations_on_the_new_record(client):
    created = client.get("/openapi.json").json()["paths"]["/api/v1/sites"]["post"][
        "responses"]["201"]
    assert created["links"]["GET /api/v1/sites/{row_id}"]["parameters"] == {
        "path.row_id": "$response.body#/id"}
    assert {"PATCH /api/v1/sites/{row_id}", "DELETE /api/v1/sites/{row_id}"} <= \
        created["links"].keys()


def test_a_method_the_path_does_not_serve_is_405_with_every_allowed_method(admin, problem):
    # Starlette names only the first route that matched the path, and FastAPI has one route
    # per method: the Allow header said "GET" for a path that also serves PATCH and DELETE.
    response = admin.put("/sites/site_x", {"name": "x"})
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    response = admin.request("TRACE", "/sites")
    problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"


def test_a_body_that_is_not_utf8_is_a_documented_400_problem(admin, client, problem):
    response = admin.post("/sites", content=b"\xff\xfe{", headers={
        "Content-Type": "application/json"})
    problem(response, 400, "bad_request")
    documented = client.get("/openapi.json").json()["paths"]["/api/v1/sites"]["post"][
        "responses"]
    assert "bad_request" in documented["400"]["description"]
