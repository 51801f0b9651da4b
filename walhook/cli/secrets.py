"""``walhook secrets``: keys for signing secrets at rest (a new key; re-encrypting every secret with the first)."""

from __future__ import annotations

import argparse

from walhook.cli.common import Command, Group, show, store_of


async def cmd_new_key(args: argparse.Namespace) -> int:
    from models.secretbox import new_key

    print(new_key(args.id))
    return 0


async def cmd_rotate_key(args: argparse.Namespace) -> int:
    """Opening the store checks every key in use and seals plain secrets; then each row moves to the first key."""
    async with store_of(args) as store:
        count = await store.reseal_secrets()  # without any key configured: an error saying so
        current = store.keyring.current if store.keyring else ""
    show(args, {"resealed": count, "key_id": current},
         f"{count} signing secrets re-encrypted with key {current!r}; every secret now uses it, so the other keys "
         "can be removed from [store] secret_keys")
    return 0


def register(command: Command, group: Group) -> None:
    secrets = group("secrets", "keys that encrypt signing secrets at rest")
    command("new-key", cmd_new_key, "print a new random key for [store] secret_keys", secrets,
            config=False).add_argument("--id", default="k1", help="the key id (default k1)")
    command("rotate-key", cmd_rotate_key, "re-encrypt every signing secret with the first of [store] secret_keys "
            "(resumable: run it again after an interruption)", secrets)
