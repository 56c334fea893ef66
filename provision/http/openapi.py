"""The service's OpenAPI document: the error answers each route declares, and what FastAPI
cannot infer (``POST /jobs``'s body, read by ``parse_event``; our 422 body instead of FastAPI's).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from provision.http.gate import BODY_TIMEOUT_SECONDS, MAX_BODY_BYTES
from provisioner_types import ErrorBody, SignupEvent

DESCRIBED = {
    401: "Missing or wrong bearer token (`unauthorized`).",
    403: "The token lacks the scope this route needs (`forbidden`).",
    404: "No such job, batch, site or route, or one of an account the token may not see "
    "(`not_found`).",
    408: f"The body took over {BODY_TIMEOUT_SECONDS:g} s to arrive (`request_timeout`).",
    409: "The job is in another status (`wrong_status`), or the idempotency key belongs to "
    "a different request (`idempotency_key_reused`).",
    413: f"The body is over {MAX_BODY_BYTES} bytes (`body_too_large`).",
    422: "Invalid input (`validation_error`, `key_mismatch`, `bad_cursor`, `empty_filter`); "
    "`field` names it.",
    503: "The status database is unreachable or behind the schema.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all with the one error body."""
    return {s: {"model": ErrorBody, "description": DESCRIBED[s]} for s in statuses}


class Service(FastAPI):
    """FastAPI, its OpenAPI document completed once, on first use."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is not None:
            return self.openapi_schema
        schema = super().openapi()  # cached as self.openapi_schema: completed in place
        # POST /jobs reads its body itself (parse_event validates it); document its shape.
        event = SignupEvent.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event.pop("$defs", {}))
        components["SignupEvent"] = event
        # FastAPI documents its own 422 body on routes with parameters; ours is the error body.
        for operations in schema["paths"].values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "422" in responses:
                    responses["422"] = {
                        "description": DESCRIBED[422],
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ErrorBody"}
                            }
                        },
                    }
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        return schema
