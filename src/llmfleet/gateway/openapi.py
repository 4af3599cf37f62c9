"""The OpenAPI 3.1 description of the gateway's routes, served at ``GET /openapi.json``.

Request schemas come from the pydantic types the gateway validates with (:mod:`llmfleet.api.types`), so the
description cannot drift from what is enforced; the fuzz tests (schemathesis) generate requests from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llmfleet.api.types import ChatCompletionRequest, CompletionRequest
from llmfleet.gateway.routes import AUX_ROUTES, AuxRoute

_REF = "#/components/schemas/{model}"
_ERROR = {"$ref": "#/components/schemas/Error"}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): _json(_ERROR, "OpenAI-style error") for s in statuses}


def _generation(schema_name: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema_name)}}},
            },
            "responses": {
                "200": {
                    "description": "The completion (JSON), or an SSE stream when `stream` is true",
                    "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}},
                },
                **_errors(400, 404, 408, 413, 429, 502, 503, 504),
            },
        }
    }


def _pass_through(route: AuxRoute) -> dict[str, Any]:
    """A route the gateway routes by ``model`` and passes through (the engine validates the rest)."""
    fields: dict[str, Any] = {f: {} for f in route.text_fields}
    model = {"type": "string", "description": "The model (or LoRA adapter) to route to"}
    schema: dict[str, Any] = {
        "type": "object",
        "required": [] if route.model_optional else ["model"],
        "properties": {"model": model, **fields},
    }
    ok = "The engine's answer (JSON)" + (", or its SSE stream when `stream` is true" if route.streams else "")
    content: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if route.streams:
        content["text/event-stream"] = {}
    return {
        "post": {
            "summary": route.summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {"200": {"description": ok, "content": content}, **_errors(400, 404, 413, 429, 502, 503, 504)},
        }
    }


def _admin(method: str, summary: str, body: dict[str, Any] | None = None, query: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "security": [{"bearer": []}],
        "responses": {"200": _json({"type": "object"}, "OK"), **_errors(400, 401)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if query:
        op["parameters"] = [{"name": "url", "in": "query", "required": True, "schema": {"type": "string"}}]
    return {method: op}


def openapi_document(models: Sequence[str] = ()) -> dict[str, Any]:
    """The document; ``models`` (the served model names) become the ``model`` field's examples."""
    schemas: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    for cls in (CompletionRequest, ChatCompletionRequest):
        schema = cls.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        if models:
            schema["properties"]["model"] = {**schema["properties"]["model"], "examples": list(models)}
        schemas[cls.__name__] = schema
    replica = {
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "pool": {"type": "string"},
            "weight": {"type": "number", "exclusiveMinimum": 0},
        },
    }
    plain = {"200": {"description": "OK"}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "llmfleet gateway", "version": "1", "description": "OpenAI-compatible front door"},
        "paths": {
            "/v1/completions": _generation("CompletionRequest", "Text completion (vLLM/OpenAI)"),
            "/v1/chat/completions": _generation("ChatCompletionRequest", "Chat completion (vLLM/OpenAI)"),
            **{path: _pass_through(route) for route in AUX_ROUTES.values() for path in route.paths},
            "/v1/models": {"get": {"summary": "Served models", "responses": {"200": _json({"type": "object"}, "")}}},
            "/health": {"get": {"summary": "Liveness", "responses": plain}},
            "/ready": {"get": {"summary": "Readiness", "responses": {**plain, "503": {"description": "Not ready"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": plain}},
            "/admin/replicas": {
                **_admin("get", "List replicas"),
                **_admin("post", "Register a replica", replica),
                **_admin("delete", "Remove a replica", query=True),
            },
            "/admin/replicas/drain": _admin("post", "Drain a replica", replica),
            "/admin/status": _admin("get", "Status document (llmfleet.status/v1)"),
            "/admin/autoscaler": _admin("post", "Publish the autoscaler's last decision", {"type": "object"}),
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
