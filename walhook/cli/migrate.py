"""``walhook migrate``: bring the store's schema to this version of walhook, then exit.

Every process migrates the schema when it opens the store (under an advisory lock, so concurrent
starts are safe); this command does it alone, as a deployment's step before the processes roll
out (the Kubernetes migrations Job), so that a migration that fails shows as one failed step with
its message rather than as every process restarting. It opens the store as the processes do, so it
also checks that the configured secret keys read every stored signing secret.
"""

from __future__ import annotations

import argparse

from walhook.cli.common import Command, show, store_of


async def cmd_migrate(args: argparse.Namespace) -> int:
    from models.migrations import MIGRATIONS

    async with store_of(args) as store:
        pass  # opening the store applies the missing migrations and checks the keys
    version = max(number for number, _ in MIGRATIONS)
    schema = store.schema
    show(args, {"schema": schema, "version": version}, f"store schema {schema!r} is at version {version}")
    return 0


def register(command: Command) -> None:
    command("migrate", cmd_migrate, "apply the store's schema migrations and exit (each process also applies "
            "them when it starts)")
