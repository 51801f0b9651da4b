"""What an entity's events can carry, and whether a condition can ever hold on it (pure).

An entity's *shape* is its properties and what JSON each one arrives as, from the configured
``[[entities]]`` (excluded columns, property-name style) and, when the source database could be
read, the table's columns and their types. Without the table's columns only the configured
facts are checked (excluded columns, and the columns the mapping names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from models.events import camel_case
from models.samples import named_columns
from models.settings import EntitySettings
from publisher.routing.conditions import Compared, Condition, ConditionError, Scalar

# What JSON a column's values arrive as (see docs/concepts/events.md: values are typed JSON).
NUMBER_TYPES = frozenset({"int2", "int4", "int8", "oid", "float4", "float8"})
FLOAT_TEXTS = frozenset({"NaN", "Infinity", "-Infinity"})


@dataclass(frozen=True)
class Column:
    """One column of the source table, as the catalog describes it (domains resolved to their base)."""

    name: str
    type_name: str
    category: str  # pg_type.typcategory: A array, B boolean, E enum, N numeric, ...
    not_null: bool = False
    labels: tuple[str, ...] = ()  # an enum's labels


@dataclass(frozen=True)
class PropertyType:
    """What JSON a property arrives as: string, number, boolean, array or json (anything)."""

    kind: str
    type_name: str
    not_null: bool = False
    labels: frozenset[str] = frozenset()


@dataclass(frozen=True)
class EntityShape:
    """The properties an entity's events carry; ``complete`` when the table's columns were read."""

    entity_key: str
    properties: dict[str, PropertyType] = field(default_factory=dict)
    excluded: frozenset[str] = frozenset()
    complete: bool = False


def kind_of(column: Column) -> str:
    if column.category == "A":
        return "array"
    if column.type_name in ("json", "jsonb"):
        return "json"
    if column.category == "B":
        return "boolean"
    return "number" if column.type_name in NUMBER_TYPES else "string"


def shape_of(entity: EntitySettings, columns: Sequence[Column] | None = None) -> EntityShape:
    """The entity's shape: from its table's ``columns`` when given, else only what the mapping names."""
    style = camel_case if entity.property_names == "camel_case" else str
    excluded = frozenset(style(name) for name in entity.exclude_columns)
    if columns is None:
        known = {style(name): PropertyType("json", "unknown") for name in named_columns(entity)}
        return EntityShape(entity.entity_key, {k: v for k, v in known.items() if k not in excluded}, excluded)
    properties = {style(c.name): PropertyType(kind_of(c), c.type_name, c.not_null, frozenset(c.labels))
                  for c in columns if c.name not in entity.exclude_columns}
    return EntityShape(entity.entity_key, properties, excluded, complete=True)


def check_condition(condition: Condition, shapes: Iterable[EntityShape]) -> None:
    """Refuse a condition that cannot hold on any of ``shapes`` (the entities its subscription matches).

    The error names the property and why: unknown, excluded, or compared with a value its type
    never has. With several entities (a wildcard key) it must be possible on at least one.
    """
    errors = [_problem(condition, shape) for shape in shapes]
    if errors and all(errors):
        raise ConditionError(next(error for error in errors if error))


def _problem(condition: Condition, shape: EntityShape) -> str | None:
    for compared in condition.compared():
        problem = _compared_problem(compared, shape)
        if problem:
            return f"{compared.where}: {problem}"
    return None


def _compared_problem(compared: Compared, shape: EntityShape) -> str | None:
    name = compared.property
    if name in shape.excluded:
        return f"property {name!r} of {shape.entity_key} is excluded (exclude_columns): events never carry it"
    found = shape.properties.get(name)
    if found is None:
        if not shape.complete:
            return None
        return (f"unknown property {name!r} of {shape.entity_key}; known: "
                f"{', '.join(sorted(shape.properties))}")[:500]
    if compared.null_test and found.not_null:
        return f"property {name!r} of {shape.entity_key} is NOT NULL: is_null true never holds"
    return next((p for value in compared.values if (p := _value_problem(name, value, found, shape.entity_key))), None)


def _value_problem(name: str, value: Scalar, found: PropertyType, entity_key: str) -> str | None:
    kind = "boolean" if isinstance(value, bool) else "number" if isinstance(value, int | float) else "string"
    where = f"property {name!r} of {entity_key} ({found.type_name})"
    if found.kind == "json":
        return None
    if found.kind == "array":
        return f"{where} is an array: it never equals a {kind}"
    if found.kind == "number" and kind == "string" and found.type_name.startswith("float") and value in FLOAT_TEXTS:
        return None
    if found.kind != kind:
        return f"{where} is a {found.kind}: it never equals the {kind} {value!r}"[:300]
    if found.labels and value not in found.labels:
        return f"{value!r} is not a value of {where}; its values: {', '.join(sorted(found.labels))}"[:300]
    return None
