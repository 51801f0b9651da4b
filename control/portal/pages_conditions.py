"""The "only when" rows of the integration page: the entities' columns they offer, and adding or removing a row.

Adding and removing a row is an htmx fragment: the form's rows of one entity come in, the
entity's rows come back with one more (or one less), re-numbered; nothing is saved. The
columns come from ``control.columns.entity_shapes`` (the source table's columns when
``[source]`` can be read), kept for a few seconds so that a page, its preview and its save
read the catalog once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from control.columns import entity_shapes
from control.errors import PortalDenied
from control.portal.auth import Scope, can_manage, scope
from control.portal.condition_rows import COMBINATORS, MAX_ROWS, OPERATORS, SIDES, EntityRows, Kinds, Row, read_rows
from control.portal.render import environment, page
from publisher.routing.shapes import EntityShape

router = APIRouter(prefix="/portal/o/{organization_id}", include_in_schema=False, dependencies=[Depends(scope)])
SHAPES_SECONDS = 5.0
environment.globals.update(only_operators=OPERATORS, only_combinators=COMBINATORS, only_sides=SIDES)


async def shapes_of(request: Request) -> dict[str, EntityShape]:
    """Every configured entity's shape by entity key, read at most once per ``SHAPES_SECONDS``."""
    state = request.app.state
    kept = getattr(state, "portal_shapes", None)
    if kept is not None and time.monotonic() - kept[0] < SHAPES_SECONDS:
        return kept[1]  # type: ignore[no-any-return]
    settings = state.settings
    shapes = await entity_shapes(settings.entities, settings.source.dsn if settings.source is not None else None)
    found = {shape.entity_key: shape for shape in shapes}
    state.portal_shapes = (time.monotonic(), found)
    return found


def kinds_of(shapes: Mapping[str, EntityShape]) -> dict[str, Kinds]:
    """Entity key -> property -> the JSON kind its values arrive as."""
    return {key: {name: found.kind for name, found in shape.properties.items()} for key, shape in shapes.items()}


def properties_of(shapes: Mapping[str, EntityShape]) -> dict[str, list[str]]:
    """Entity key -> its properties in column order, for the rows' property select."""
    return {key: list(shape.properties) for key, shape in shapes.items()}


def changed_rows(rows: EntityRows, action: str, index: int) -> EntityRows:
    """The rows after "add" (a blank row at the end) or "remove" (row ``index``)."""
    if action == "add":
        return EntityRows(rows.combinator, [*rows.rows, Row()][:MAX_ROWS])
    if action == "remove":
        return EntityRows(rows.combinator, [row for i, row in enumerate(rows.rows) if i != index])
    raise PortalDenied(422, f"only_action: use add or remove, not {action[:40]!r}")


# Declared before /integrations/{integration_id} (routes.py lists this router first).
@router.post("/integrations/only-when")
async def only_when_rows(request: Request, granted: Scope = Depends(can_manage),
                         only_entity: str = Form(max_length=200), only_action: str = Form(max_length=20),
                         only_row: int = Form(-1, ge=-1, le=MAX_ROWS)) -> Response:
    """One entity's "only when" rows with a row added or removed, as the fragment that replaces them."""
    shapes = await shapes_of(request)
    if only_entity not in shapes:
        raise PortalDenied(404, f"entity key {only_entity!r} is not in this deployment's catalogue")
    form = await request.form()
    rows = read_rows({name: str(value) for name, value in form.items()}).get(only_entity, EntityRows())
    response = page(request, "fragments/only_when.html", key=only_entity, properties=properties_of(shapes).get(
        only_entity, []), rows=changed_rows(rows, only_action, only_row), scope=granted, error=None, error_row=None,
        readonly=False)
    # The RAW JSON box follows: it asks for a preview once the rows are swapped in (after its delay).
    response.headers["hx-trigger"] = "only-when-changed"
    return response
