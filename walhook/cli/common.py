"""What every command shares: settings, the store, output, and stopping on signals."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from models.errors import WalhookError
from models.events import parse_time
from models.settings import Settings
from walhook.config import discover_settings

if TYPE_CHECKING:
    from publisher.store import Store

Handler = Callable[[argparse.Namespace], Awaitable[int]]
Command = Callable[..., argparse.ArgumentParser]
Group = Callable[[str, str], "argparse._SubParsersAction[argparse.ArgumentParser]"]
"""``command(name, handler, help, parent=..., config=True)``: adds a subcommand and returns its parser."""


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: every loop then finishes what it must and exits."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings of ``--config``, ``$WALHOOK_CONFIG`` or ``./walhook.toml`` (see ``walhook.config``)."""
    return discover_settings(getattr(args, "config", None))


def store_of(args: argparse.Namespace) -> Store:
    """The store named by the configuration; open it with ``async with``. Refused when the command was
    asked to work through the API (``--api``): it must never read the local store instead, which may be
    another deployment's, or every organization's."""
    from publisher.store import store_for

    if getattr(args, "api", None) or os.environ.get("WALHOOK_API"):
        raise WalhookError(f"walhook {' '.join(_command_words(args))} does not work through --api; run it where "
                           "the configuration names the store, without --api")

    settings = settings_of(args)
    settings.require("store")
    assert settings.store is not None
    return store_for(settings.store)


def moment(text: str) -> datetime:
    """An ISO 8601 time from the command line; a bad one is named."""
    try:
        return parse_time(text)
    except ValueError as exc:
        raise WalhookError(str(exc)) from exc


def show(args: argparse.Namespace, data: Mapping[str, object], text: str) -> None:
    """``text`` for a person, or ``data`` as JSON with ``--json``; flushed at once, so that a pipe sees it
    before a long wait that follows (``replay --wait``), not when the command ends."""
    print(orjson.dumps(data, default=_plain).decode() if getattr(args, "json", False) else text, flush=True)


def table(args: argparse.Namespace, rows: list[Any], columns: list[tuple[str, int]]) -> None:
    """Rows (dataclasses or mappings) as a table, or as JSON with ``--json``."""
    if args.json:
        print(orjson.dumps(rows, default=_plain).decode())
        return
    print(" ".join(f"{name.upper():<{width}}" for name, width in columns).rstrip())
    for row in rows:
        values = [row[name] if isinstance(row, Mapping) else getattr(row, name) for name, _ in columns]
        print(" ".join(f"{'-' if value is None else value!s:<{width}}"
                       for value, (_, width) in zip(values, columns, strict=True)).rstrip())


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _command_words(args: argparse.Namespace) -> list[str]:
    return [str(word) for word in (getattr(args, "command", None), getattr(args, "action", None)) if word]
