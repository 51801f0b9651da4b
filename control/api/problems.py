"""API errors as RFC 9457 problem details: ``application/problem+json``.

Every error of the API is one JSON object: ``type`` (a URI naming the kind of problem), ``title``
(that kind in words), ``status``, ``detail`` (the one-line message a person reads, the one the
CLI prints) and, for a request that fails validation, ``errors`` naming each bad field.

walhook's own errors map to HTTP once, here (:data:`KINDS`): each class has a status and a stable
``type``, ``https://walhook.dev/problems/<slug>``, so a client can tell a refused destination
from a malformed secret (both 422) without parsing words. The URIs identify; a client compares
them as strings and never fetches them (the API reference describes each). Conditions plain
HTTP already names (missing credentials, an unknown route, a body over the limit) are
``about:blank`` with the status's phrase as ``title``, as RFC 9457 section 4.2.1 asks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from cdc.errors import BackfillRefused
from control.errors import Forbidden, LinkRefused
from models.errors import Conflict, NotFound, SecretError, StoreError
from publisher.errors import JobRefused, SubscriptionError
from publisher.sending.ssrf import DestinationRefused

MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://walhook.dev/problems/"


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of problem walhook names itself: its status, its ``type`` slug and its title."""

    status: int
    slug: str
    title: str

    @property
    def type(self) -> str:
        return TYPE_BASE + self.slug


KINDS: list[tuple[type[Exception], Kind]] = [
    (NotFound, Kind(404, "not-found", "Not found")),
    (Conflict, Kind(409, "conflict", "Already exists or over a limit")),
    (DestinationRefused, Kind(422, "destination-refused", "Destination not allowed")),
    (SecretError, Kind(422, "invalid-secret", "Invalid signing secret")),
    (SubscriptionError, Kind(422, "invalid-subscription", "Invalid event subscription")),
    (JobRefused, Kind(422, "replay-refused", "Replay refused")),
    (LinkRefused, Kind(422, "portal-link-refused", "Portal link refused")),
    (BackfillRefused, Kind(422, "backfill-refused", "Backfill refused")),
    (Forbidden, Kind(403, "forbidden", "Action not allowed")),
    (StoreError, Kind(503, "store-unavailable", "Store unavailable")),
]
"""walhook's errors the API answers, by class (a subclass takes its own row, else its base's)."""

THROTTLED = Kind(429, "throttled", "Too many manual actions")
INVALID = Kind(422, "invalid-request", "Invalid request")


class FieldProblem(BaseModel):
    """One field of a request that failed validation."""

    loc: list[str | int] = Field(description="where: `body`, `query`, `path` or `header`, then the field's path")
    pointer: str | None = Field(default=None, description="for a body field: a JSON Pointer to it as a URI "
                                "fragment (RFC 6901), e.g. `#/headers/x-team`")
    detail: str = Field(description="what is wrong with it")
    type: str = Field(description="the kind of validation error, e.g. `missing`, `url_scheme`, `less_than_equal`")


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (``application/problem+json``)."""

    type: str = Field(default="about:blank", description="the kind of problem: `https://walhook.dev/problems/"
                      "<slug>`, or `about:blank` when the status says it all")
    title: str = Field(description="the kind of problem in words (the same for every problem of a type)")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="this problem in one line, for a person")
    errors: list[FieldProblem] | None = Field(default=None, description="for `invalid-request`: each bad field")


def problem(status: int, detail: str, kind: Kind | None = None, *, errors: list[FieldProblem] | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The ``application/problem+json`` answer; without ``kind``, ``about:blank`` titled by the status."""
    described = Problem(type=kind.type, title=kind.title, status=status, detail=detail, errors=errors) if kind \
        else Problem(title=_phrase(status), status=status, detail=detail)
    return JSONResponse(described.model_dump(exclude_none=True), status_code=status, media_type=MEDIA_TYPE,
                        headers=headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def invalid(errors: list[dict[str, Any]]) -> JSONResponse:
    """A 422 for validation ``errors`` (each with ``type``, ``loc`` and ``msg``), every field named."""
    fields = [FieldProblem(loc=error["loc"], pointer=_pointer(error), detail=str(error["msg"]),
                           type=str(error["type"])) for error in errors]
    detail = "; ".join(f"{_where(field)}: {field.detail}" for field in fields) or "invalid request"
    return problem(422, detail, INVALID, errors=fields)


def _pointer(error: dict[str, Any]) -> str | None:
    """A body field's JSON Pointer as a URI fragment; None for a parameter, or a body that is not JSON."""
    loc = error["loc"]
    if loc[:1] != ["body"] or error["type"] == "json_invalid":  # its loc ends with a character offset
        return None
    escaped = (str(part).replace("~", "~0").replace("/", "~1") for part in loc[1:])
    return "#" + quote("".join("/" + part for part in escaped), safe="/~!$&'()*+,;=:@")


def _where(field: FieldProblem) -> str:
    """How ``detail`` names a field: its path in the body, else ``query.limit``, ``path.integration_id``."""
    parts = [str(part) for part in field.loc]
    if parts[:1] == ["body"] and len(parts) > 1:  # a body that is not JSON: its loc's end is an offset
        parts = parts[1:] if field.pointer is not None else parts[:1]
    return ".".join(parts) or "request"


_PROBLEM_RESPONSE = {"description": "Problem (RFC 9457)",
                     "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
RESPONSES: dict[int | str, dict[str, Any]] = {"4XX": _PROBLEM_RESPONSE, "5XX": _PROBLEM_RESPONSE}
"""Every route's error answers in OpenAPI (the app's default ``responses``)."""


def document(app: FastAPI) -> None:
    """Add :class:`Problem`'s schema to ``app``'s OpenAPI document, where :data:`RESPONSES` refers to it."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _, schemas = models_json_schema([(Problem, "serialization")],
                                            ref_template="#/components/schemas/{model}")
            generate().setdefault("components", {}).setdefault("schemas", {}).update(schemas["$defs"])
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
