"""A small JSON client for the operator REST API, as couriers' and shops' systems use it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["ApiClient", "ApiProblem"]


class ApiProblem(Exception):
    """The API answered with an RFC 9457 problem (or could not be reached: status 0)."""

    def __init__(self, status: int, type_: str, detail: str) -> None:
        super().__init__(f"{status} {type_}: {detail}")
        self.status = status
        self.type = type_
        self.detail = detail

    @property
    def slug(self) -> str:
        return self.type.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class ApiClient:
    """``Authorization: Bearer`` JSON calls against ``base_url`` (e.g. http://127.0.0.1:8080)."""

    base_url: str
    key: str | None = None
    timeout: float = 30.0

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        url = self.base_url.rstrip("/") + path
        if params:
            query = {k: v for k, v in params.items() if v is not None}
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("Authorization", f"Bearer {self.key}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            try:
                problem = json.loads(raw)
            except ValueError:
                problem = {}
            raise ApiProblem(
                exc.code,
                str(problem.get("type", "about:blank")),
                str(problem.get("detail") or problem.get("title") or raw[:200]),
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ApiProblem(0, "unreachable", str(exc)) from None
        return json.loads(raw) if raw else None

    def get(self, path: str, **params: Any) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        return self.call("POST", path, body, params)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.get("/readyz")
                return
            except ApiProblem as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"API not ready: {exc}") from exc
            time.sleep(0.2)

    def paginate(self, path: str, **params: Any) -> list[Any]:
        """Every item of a cursor-paginated list."""
        items: list[Any] = []
        cursor = None
        while True:
            page = self.get(path, cursor=cursor, **params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items
