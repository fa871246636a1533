"""schemathesis against the served OpenAPI document, in-process (WSGI).

Every operation is called with generated inputs (valid and invalid) under an admin
key of every site, on top of a small world (two sites, cabinets, keys). The checks
are the acceptance criteria: no 5xx, every status documented, every body valid
against its schema, the documented content type. Bounded: a few dozen examples per
operation.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import World

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 8


def test_every_operation_keeps_its_contract(app: Flask, world: World) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    parcel = world.client.post(
        "/api/v1/parcels", json={"size": "s", "cabinet": "cab-1"}, headers=world.as_admin()
    ).json["id"]
    webhook = world.client.post(
        "/api/v1/webhooks",
        json={"site": "s1", "url": "http://127.0.0.1:9/hook", "event_types": ["alert.raised"]},
        headers=world.as_admin(),
    ).json["id"]
    # Real ids, so that generated bodies and queries also reach past the lookups.
    known = {
        "webhook": str(webhook),
        "site": "s1",
        "cabinet": "cab-1",
        "compartment": "A1",
        "parcel": parcel,
        "alert": "1",
        "command": "0",
    }
    failures: dict[str, str] = {}
    calls = {"n": 0}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25
    runs = []
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        runs.append((operation, "positive", operation.as_strategy()))
        has_input = bool(names) or operation.body or operation.query
        if has_input:
            negative = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
            runs.append((operation, "negative", negative))
        if names:
            fixed = {name: known[name] for name in names}
            runs.append((operation, "known ids", operation.as_strategy(path_parameters=fixed)))
    for operation, mode, strategy in runs:

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            calls["n"] += 1
            case.call_and_validate(headers=world.as_admin(), checks=CHECKS)

        try:
            run()
        except Exception as exc:  # every operation is tried; all failures are shown
            failures[f"{operation.label} ({mode})"] = str(exc)[:2000]
    assert failures == {}
    assert calls["n"] >= len(runs) * 3
