"""The OpenAPI 3.1 document, built from the route registry and the pydantic models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from smartlocker import __version__

from .errors import PROBLEM_CONTENT_TYPE, Problem
from .routing import Operation

__all__ = ["build_openapi"]

_REF = "#/components/schemas/{model}"
_ERROR_TEXT = {
    400: "Invalid input (problem type `validation` lists the fields)",
    401: "Missing or invalid API key",
    403: "The key's role may not do this",
    404: "Not found (or in a site the key does not reach)",
    409: "Conflicts with the current state",
    422: "Cannot be done in the current state",
    429: "Rate limited (see `Retry-After`)",
    503: "Not ready",
}


def build_openapi(operations: Sequence[Operation]) -> dict[str, Any]:
    """The whole document for ``operations``."""
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for op in operations:
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
        for _, (_, model) in op.extra_responses.items():
            if model is not None:
                wanted.append((model, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, defs = models_json_schema(unique, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, schemas)

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smartlocker operator API",
            "version": __version__,
            "description": "Sites, cabinets, parcels, commands, audit, telemetry and alerts."
            " Errors are RFC 9457 problem details; lists are cursor-paginated.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer slk_<id>_<secret>`",
                }
            },
        },
    }


def _operation(
    op: Operation,
    refs: Mapping[tuple[Any, JsonSchemaMode], Any],
    schemas: dict[str, Any],
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": pattern},
        }
        for name, pattern in op.path_params.items()
    ]
    if op.query is not None:
        qschema = op.query.model_json_schema(ref_template=_REF, mode="validation")
        schemas.update(qschema.pop("$defs", {}))
        required = set(qschema.get("required", []))
        for name, prop in qschema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in prop.items() if k != "description"},
            }
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)

    responses: dict[str, Any] = {}
    if op.response is not None:
        responses[str(op.status)] = {
            "description": "Success",
            "content": {"application/json": {"schema": refs[(op.response, "serialization")]}},
        }
    else:
        responses[str(op.status)] = {"description": "Success"}
    for code, (text, model) in op.extra_responses.items():
        entry: dict[str, Any] = {"description": text}
        if model is not None:
            entry["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
        responses[str(code)] = entry
    problem_ref = refs[(Problem, "serialization")]
    for code in op.errors:
        responses[str(code)] = {
            "description": _ERROR_TEXT.get(code, "Error"),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": problem_ref}},
        }

    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": params,
        "responses": responses,
        "security": [] if op.roles is None else [{"apiKey": []}],
    }
    if op.description:
        out["description"] = op.description
    if op.roles is not None:
        out["x-roles"] = sorted(r.value for r in op.roles)
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return out
