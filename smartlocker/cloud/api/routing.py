"""Routes that declare their models: one registry serves Flask and the OpenAPI document.

A view is registered with :func:`operation`, which names its method and path, the
roles that may call it, and its pydantic models (path parameters, query, body,
response). The wrapper authenticates, validates the input into those models (400
with the pydantic errors listed), calls the view with them as keyword arguments and
serialises what the view returns through the response model. :mod:`.openapi` reads
the same registry, so the served document cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from flask import Blueprint, Response, request
from pydantic import BaseModel, ValidationError

from .auth import Role, authenticate, set_principal
from .errors import Forbidden, NotFound, ValidationFailed

__all__ = ["OPERATIONS", "Operation", "json_response", "operation"]

_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")

#: Every declared operation, in registration order.
OPERATIONS: list[Operation] = []


@dataclass(frozen=True)
class Operation:
    """One method on one path, as the OpenAPI document describes it."""

    method: str
    rule: str
    operation_id: str
    summary: str
    tag: str
    roles: frozenset[Role] | None
    path_params: dict[str, str]
    query: type[BaseModel] | None
    body: type[BaseModel] | None
    response: type[BaseModel] | None
    status: int
    errors: tuple[int, ...]
    description: str = ""
    extra_responses: dict[int, tuple[str, type[BaseModel] | None]] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The OpenAPI path (``/api/v1/sites/{site}``)."""
        return self.rule


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON response straight from pydantic's serializer."""
    body = model.__pydantic_serializer__.to_json(model, by_alias=True)
    return Response(body, status=status, mimetype="application/json", headers=headers)


def operation(
    bp: Blueprint,
    method: str,
    rule: str,
    *,
    summary: str,
    roles: Iterable[Role] | None,
    path_params: dict[str, str] | None = None,
    query: type[BaseModel] | None = None,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    errors: Iterable[int] = (),
    description: str = "",
    extra_responses: Mapping[int, tuple[str, type[BaseModel] | None]] | None = None,
    prefix: str = "/api/v1",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``view`` on ``bp`` and in :data:`OPERATIONS`.

    ``roles`` None means public (no API key); otherwise the key's role must be one of
    them (403 if not). ``path_params`` maps each path parameter to its regex: a value
    that does not match cannot name anything, so it is a 404.
    """
    allowed = None if roles is None else frozenset(roles)
    params = dict(path_params or {})
    declared = set(_PATH_PARAM.findall(rule))
    if declared != set(params):
        raise ValueError(f"{rule}: path parameters {sorted(declared)} need patterns")
    compiled = {name: re.compile(pattern) for name, pattern in params.items()}
    error_codes = set(errors) | {400}
    if allowed is not None:
        error_codes |= {401, 403}
    if params:
        error_codes.add(404)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        op = Operation(
            method=method.upper(),
            rule=prefix + rule,
            operation_id=view.__name__,
            summary=summary,
            tag=bp.name,
            roles=allowed,
            path_params=params,
            query=query,
            body=body,
            response=response,
            status=status,
            errors=tuple(sorted(error_codes)),
            description=description or (view.__doc__ or "").strip(),
            extra_responses=dict(extra_responses or {}),
        )
        OPERATIONS.append(op)

        @wraps(view)
        def wrapper(**path: str) -> Response:
            if allowed is not None:
                principal = authenticate(request.headers.get("Authorization"))
                set_principal(principal)
                if principal.role not in allowed:
                    raise Forbidden(f"role {principal.role.value!r} may not {summary.lower()}")
            for name, value in path.items():
                if not compiled[name].fullmatch(value):
                    raise NotFound(f"no such {name}: {value!r}")
            kwargs: dict[str, Any] = dict(path)
            if query is not None:
                kwargs["query"] = _parse_query(query)
            if body is not None:
                kwargs["body"] = _parse_body(body)
            result = view(**kwargs)
            if isinstance(result, Response):
                return result
            if isinstance(result, tuple):
                model, code = result
                return json_response(model, code)
            if result is None:
                return Response(status=204)
            return json_response(result, status)

        flask_rule = prefix + _PATH_PARAM.sub(r"<\1>", rule)
        bp.add_url_rule(flask_rule, view.__name__, wrapper, methods=[method.upper()])
        return view

    return decorate


def _parse_body(model: type[BaseModel]) -> BaseModel:
    data = request.get_data(cache=False)
    if not data.strip():
        data = b"{}"
    try:
        parsed = model.model_validate_json(data)
    except ValidationError as exc:
        raise ValidationFailed(
            "the request body does not match " + model.__name__,
            exc.errors(include_url=False, include_input=False),
        ) from None
    _storable(parsed.model_dump(), ("body",))
    return parsed


def _storable(value: Any, loc: tuple[str | int, ...]) -> None:
    """Refuse text PostgreSQL cannot store (NUL) or UTF-8 cannot encode (lone surrogates)."""
    if isinstance(value, str):
        if "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value):
            raise ValidationFailed(
                "text must not contain NUL or unpaired surrogates",
                [{"loc": list(loc), "msg": "unstorable character", "type": "string_unstorable"}],
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(item, (*loc, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _storable(item, (*loc, index))


def _parse_query(model: type[BaseModel]) -> BaseModel:
    raw: dict[str, Any] = {}
    for key in request.args:
        values = request.args.getlist(key)
        raw[key] = values if len(values) > 1 else values[0]
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        raise ValidationFailed(
            "the query parameters are invalid",
            exc.errors(include_url=False, include_input=False),
        ) from None
    _storable(parsed.model_dump(), ("query",))
    return parsed
