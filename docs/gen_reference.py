"""The generated reference pages: configuration, command line and management API, written from the code.

``python docs/gen_reference.py`` (``make docs``) writes them under ``docs/reference/generated/``; the
hand-written reference pages include them. ``tests/test_docs.py`` fails when the committed pages differ
from what this writes, so they follow the code they describe.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: document this checkout's code
    sys.path.insert(0, str(ROOT))

# What the pages document: the only imports of walhook's own code. When a module moves, change it here.
from control.api.app import create_app  # noqa: E402
from models.settings import Settings, StoreSettings  # noqa: E402
from walhook.cli import build_parser  # noqa: E402

OUTPUT = ROOT / "docs" / "reference" / "generated"
NOTICE = "<!-- Written by docs/gen_reference.py from the code; run `make docs` after changing it. -->\n\n"
# Options every command takes; the command line page lists them once.
GLOBAL_OPTIONS = {"help", "log_level", "log_format", "event_loop", "config", "api", "token"}


def cell(text: object) -> str:
    """``text`` as one markdown table cell: on one line, its pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: tuple[str, ...], rows: Sequence[tuple[object, ...]]) -> str:
    """A markdown table, or nothing when there are no rows."""
    if not rows:
        return ""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# Configuration -----------------------------------------------------------------------------------------------


def type_name(annotation: Any) -> str:
    """A field's type as a reader writes it in TOML: ``str``, ``list[str]``, ``"skip" | "event"``."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return " | ".join(f'"{value}"' for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is list:
        return f"list[{type_name(typing.get_args(annotation)[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def default_text(field: Any) -> str:
    """A field's default as TOML shows it, ``required`` or ``none``."""
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    if isinstance(default, str):
        return f'`"{default}"`'
    return f"`{default}`"


def section_model(annotation: Any) -> tuple[str, type[BaseModel]]:
    """The heading and the model of one ``Settings`` field: ``[source]``, or ``[[entities]]`` for a list."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)] or [annotation]
    if typing.get_origin(annotation) is list:
        return "[[{}]]", args[0]
    return "[{}]", args[0]


def configuration_page() -> str:
    """One table per section of ``walhook.toml``: key, type, default and description of each field."""
    parts = [NOTICE]
    for name, field in Settings.model_fields.items():
        heading, model = section_model(field.annotation)
        summary = (model.__doc__ or "").strip().split("\n\n")[0]
        rows = [(f"`{sub.alias or key}`", f"`{type_name(sub.annotation)}`", default_text(sub), sub.description or "")
                for key, sub in model.model_fields.items()]
        parts.append(f"### `{heading.format(name)}`\n\n{' '.join(summary.split())}\n\n"
                     + table(("key", "type", "default", "description"), rows))
    return "\n".join(parts)


# Command line ------------------------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """Every command of ``parser``, groups walked into: (name, one-line help, its parser), in registration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if any(isinstance(inner, argparse._SubParsersAction) for inner in sub._actions):
                    yield from ((f"{name} {inner}", text, leaf) for inner, text, leaf in subcommands(sub))
                else:
                    yield name, helps.get(name, ""), sub


def flag_text(action: argparse.Action) -> str:
    """How an option or argument is written: ``--offset N``, ``--json``, ``ID``."""
    if not action.option_strings:
        return f"`{action.metavar or action.dest.upper()}`"
    value = "" if action.nargs == 0 else " " + str(action.metavar or action.dest.upper())
    if action.choices and not action.metavar and action.nargs != 0:
        value = " {" + ",".join(str(choice) for choice in action.choices) + "}"
    return ", ".join(f"`{flag}{value}`" for flag in action.option_strings)


def option_rows(parser: argparse.ArgumentParser, skip: set[str]) -> list[tuple[str, str, str]]:
    """The rows of a command's options table: option, what it does, its default."""
    rows = []
    for action in parser._actions:
        if action.dest in skip or isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        default = action.default
        shown = "" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else f"`{default}`"
        if action.required:
            shown = "required"
        rows.append((flag_text(action), action.help or "", shown))
    return rows


def cli_page() -> str:
    """The global options, then each command with its options, as ``walhook --help`` would list them."""
    parser = build_parser()
    header = ("option", "what it does", "default")
    parts = [NOTICE, "### Global options\n\nEvery command takes them, before or after its name.\n\n"
             + table(header, option_rows(parser, {"help", "version"}))]
    for name, help_text, sub in subcommands(parser):
        rows = option_rows(sub, GLOBAL_OPTIONS)
        parts.append(f"### `walhook {name}`\n\n{cell(help_text)}\n\n" + (table(header, rows) or "No options.\n"))
    return "\n".join(parts)


# Management API ----------------------------------------------------------------------------------------------


def openapi() -> dict[str, Any]:
    """The API's OpenAPI document, from an app built on default settings (the environment is not read)."""
    settings = Settings.model_construct(store=StoreSettings(dsn="postgresql://localhost/walhook"))
    return create_app(settings).openapi()


def schema_name(schema: dict[str, Any]) -> str:
    """A JSON schema in a few words: its model's name, its type, or the alternatives."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(schema_name(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {schema_name(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f'"{value}"' for value in schema["enum"])
    return str(schema.get("type", "any"))


def operation_text(method: str, path: str, operation: dict[str, Any]) -> str:
    """One route: its summary, description, parameters, request body and responses."""
    text = f"#### `{method.upper()} {path}`\n\n{operation.get('summary', '')}."
    if operation.get("description"):
        text += " " + " ".join(operation["description"].split())
    parameters = [(f"`{p['name']}`", p["in"], "yes" if p.get("required") else "no", schema_name(p.get("schema", {})),
                   p.get("description") or p.get("schema", {}).get("description", ""))
                  for p in operation.get("parameters", [])]
    text += "\n\n" + table(("parameter", "in", "required", "type", "description"), parameters)
    body = operation.get("requestBody", {}).get("content", {})
    if body:
        (media, content), *_ = body.items()
        text += f"\nBody ({media}): {schema_name(content.get('schema', {}))}.\n"
    answers = ", ".join(f"{code} {answer.get('description', '')}" for code, answer in operation["responses"].items())
    return text + f"\nAnswers: {answers}.\n"


def schema_text(name: str, schema: dict[str, Any]) -> str:
    """One model of the API: its fields with their types, whether required, and descriptions."""
    required = set(schema.get("required", []))
    rows = [(f"`{field}`", schema_name(spec), "yes" if field in required else "no",
             spec.get("description", ""))
            for field, spec in schema.get("properties", {}).items()]
    description = " ".join(schema.get("description", "").split())
    return f"#### `{name}`\n\n{description}\n\n" + table(("field", "type", "required", "description"), rows)


def api_page() -> str:
    """Every route of the OpenAPI document, then every model its routes take or give."""
    document = openapi()
    parts = [NOTICE, f"### Routes\n\nOpenAPI {document['openapi']}, {document['info']['title']} "
             f"{document['info']['version']}: {document['info'].get('description', '')}\n"]
    for path, operations in document["paths"].items():
        parts += [operation_text(method, path, operation) for method, operation in operations.items()]
    parts.append("### Models\n")
    schemas = document.get("components", {}).get("schemas", {})
    parts += [schema_text(name, schemas[name]) for name in sorted(schemas)]
    return "\n".join(parts)


# Writing -----------------------------------------------------------------------------------------------------


def pages() -> dict[Path, str]:
    """Each generated page and its text."""
    return {OUTPUT / "configuration.md": configuration_page(), OUTPUT / "cli.md": cli_page(),
            OUTPUT / "api.md": api_page()}


def main() -> None:
    """Write every generated page."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    for path, text in pages().items():
        path.write_text(text.rstrip("\n") + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
