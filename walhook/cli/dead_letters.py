"""``walhook dead-letters list``: the command; reading the topics is ``walhook.deadletters``."""

from __future__ import annotations

import argparse

from walhook.cli.common import Command, Group, settings_of


async def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    from walhook.deadletters import list_dead_letters

    settings = settings_of(args)
    settings.require("kafka")
    assert settings.kafka is not None
    return await list_dead_letters(settings.kafka, settings.publisher, args.limit, args.json)


def register(command: Command, group: Group) -> None:
    dead = group("dead-letters", "what the capture and the publisher could not send")
    command("list", cmd_dead_letters_list, "dead letters of both topics, oldest first", dead).add_argument(
        "--limit", type=int, default=50, help="the newest N (default 50; 0: all)")
