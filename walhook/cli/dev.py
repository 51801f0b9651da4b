"""Trying walhook out: the local stack, a verifying receiver, the demo."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from walhook.cli.common import Command, Group, stop_on_signals
from walhook.secret_input import add_secret_file_argument


async def cmd_stack_up(args: argparse.Namespace) -> int:
    import tempfile

    from walhook.stack import LocalStack, psql_path

    directory = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="walhook-stack-"))
    stack = LocalStack(directory).start()
    try:
        # For shells and scripts: `. DIR/stack.env` sets DSN, KAFKA and PSQL (written once both servers answer).
        (directory / "stack.env").write_text(f"DSN='{stack.dsn}'\nKAFKA='{stack.bootstrap_servers}'\n"
                                             f"PSQL='{psql_path()}'\n")
        print(f"postgres: {stack.dsn}\nkafka:    {stack.bootstrap_servers}\npsql:     {psql_path()}\n"
              f"files:    {directory} (. {directory / 'stack.env'} sets DSN, KAFKA and PSQL)\n(Ctrl-C stops both)",
              flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await stop.wait()
    finally:
        stack.stop()
    return 0


async def cmd_receiver(args: argparse.Namespace) -> int:
    from walhook.receiver import VerifyingReceiver
    from walhook.secret_input import organization_secrets

    secrets = organization_secrets(args.secret_file)
    receiver = VerifyingReceiver(secrets, host=args.host, port=args.port, on_webhook=lambda hook: print(
        f"verified {hook.organization} {hook.event['operationType']} {hook.event['entityPath']}", flush=True))
    async with receiver:
        print(f"listening on http://{args.host}:{receiver.port}/hooks/<organization>", flush=True)
        stop = asyncio.Event()
        stop_on_signals(stop)
        await stop.wait()
    return 0


async def cmd_demo(args: argparse.Namespace) -> int:
    from walhook.demo import run_demo

    return await run_demo(seconds=args.seconds, directory=Path(args.dir) if args.dir else None)


def register(command: Command, group: Group) -> None:
    stack = group("stack", "local Postgres + Kafka")
    command("up", cmd_stack_up, "start Postgres and the Kafka broker until Ctrl-C", stack,
            config=False).add_argument("--dir", help="keep the servers' data here (default: a new temporary directory)")
    receiver = command("receiver", cmd_receiver, "run a webhook receiver that verifies signatures", config=False)
    receiver.add_argument("--host", default="127.0.0.1")
    receiver.add_argument("--port", type=int, default=8000)
    add_secret_file_argument(receiver, "an organization's whsec_ secret, read from FILE (repeatable)", repeatable=True)
    demo = command("demo", cmd_demo, "run the whole pipeline on a local stack and show verified webhooks",
                   config=False)
    demo.add_argument("--seconds", type=float, default=0, help="stop after N seconds (default: until Ctrl-C)")
    demo.add_argument("--dir", help="keep the stack's data here (default: a temporary directory)")
