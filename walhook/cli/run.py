"""The long-running processes: ``cdc``, ``publisher`` and ``api``."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from models.errors import WalhookError
from walhook.cli.common import Command, settings_of, stop_on_signals

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from cdc.memory import SlotKeeper
    from cdc.pipeline import CaptureStats
    from models.metrics import MetricsEndpoint
    from models.settings import Settings
    from publisher.service import Publisher

log = logging.getLogger("walhook")


async def cmd_cdc(args: argparse.Namespace) -> int:
    from cdc.memory import SlotKeeper, StorePositions
    from cdc.metrics import MetricsServer
    from cdc.pipeline import CaptureStats

    settings = settings_of(args)
    settings.require("source", "kafka")
    if not settings.entities:
        raise WalhookError("no [[entities]] configured: nothing to capture")
    stop = asyncio.Event()
    stop_on_signals(stop)
    assert settings.source is not None
    stats = CaptureStats()
    # Where capture streamed is remembered in the store, which outlives a failed-over source cluster.
    memory = StorePositions(settings.store.dsn, settings.store.schema_name) if settings.store else None
    keeper = SlotKeeper(memory, accept_lost_changes=args.accept_lost_changes)
    if settings.source.metrics_address is None:
        await _capture(settings, stop, stats, keeper)
        return 0
    async with MetricsServer(stats, settings.source, settings.source.metrics_address):
        await _capture(settings, stop, stats, keeper)
    return 0


async def _capture(settings: Settings, stop: asyncio.Event, stats: CaptureStats, keeper: SlotKeeper) -> None:
    """Capture; with a ``[store]`` section the process also runs the backfills of its tables."""
    from cdc.pipeline import run_capture

    assert settings.source is not None and settings.kafka is not None
    with tracing(settings, "cdc") as tracer:
        if settings.store is None:
            await run_capture(settings.source, settings.kafka, settings.entities, stop, stats=stats, keeper=keeper,
                              tracer=tracer)
            return
        await _capture_with_store(settings, stop, stats, keeper, tracer)


async def _capture_with_store(settings: Settings, stop: asyncio.Event, stats: CaptureStats, keeper: SlotKeeper,
                              tracer: Tracer | None) -> None:
    from cdc.pipeline import run_capture
    from models.secretbox import Keyring
    from publisher.store import Store

    assert settings.source is not None and settings.kafka is not None and settings.store is not None
    # The capture reads and writes backfill jobs only, never a signing secret; but the store checks at open
    # that every stored secret can be read, so it gets the keyring the configuration names.
    keys = settings.store.secret_keys
    store = Store(settings.store.dsn, settings.store.schema_name, Keyring(keys) if keys else None)
    stats.checks.watch_store(store.ping)
    try:
        await run_capture(settings.source, settings.kafka, settings.entities, stop, stats=stats, keeper=keeper,
                          store=store, backfill=settings.backfill, tracer=tracer)
    finally:
        await store.close()


async def cmd_publisher(args: argparse.Namespace) -> int:
    from models.metrics import MetricsEndpoint, parse_address
    from publisher.metrics import PublisherMetrics
    from publisher.sending.sender import WebhookSender
    from publisher.sending.ssrf import DestinationPolicy
    from publisher.service import Publisher
    from publisher.store import store_for

    settings = settings_of(args)
    settings.require("kafka", "store")
    stop = asyncio.Event()
    stop_on_signals(stop)
    assert settings.store is not None and settings.kafka is not None
    policy = DestinationPolicy.from_strings(settings.publisher.allowed_networks)
    metrics = PublisherMetrics()
    address = settings.publisher.metrics_address
    endpoint = MetricsEndpoint(metrics.registry, *parse_address(address, "[publisher] metrics_address"),
                               "[publisher] metrics_address") if address else None
    async with store_for(settings.store) as store, \
            WebhookSender.of(settings.publisher, policy) as sender:
        with tracing(settings, "publisher") as tracer:
            publisher = Publisher(settings.kafka, settings.publisher, store, sender, settings.retention, metrics,
                                  tracer, settings.operational)
            await _publish(publisher, endpoint, stop)
    return 0


async def _publish(publisher: Publisher, endpoint: MetricsEndpoint | None, stop: asyncio.Event) -> None:
    if endpoint is None:
        await publisher.run(stop)
        return
    endpoint.readiness = publisher.checks.readiness
    async with endpoint:
        publisher.metrics_url = endpoint.url
        await publisher.run(stop)


@contextmanager
def tracing(settings: Settings, process: str) -> Iterator[Tracer | None]:
    """The process's tracer when ``[tracing]`` is on (else None); what is still buffered is exported at the end."""
    from models.tracing import tracer_for, tracer_provider

    provider = tracer_provider(settings.tracing, process)
    try:
        yield tracer_for(provider, f"walhook.{process}")
    finally:
        if provider is not None:
            provider.shutdown()


async def cmd_api(args: argparse.Namespace) -> int:
    from control.api.serve import serve
    from publisher.store import store_for

    settings = settings_of(args)
    settings.require("store")
    assert settings.store is not None
    async with store_for(settings.store):
        pass  # the store answers and is migrated: its trouble is one line here, not a lifespan traceback
    await serve(settings)  # [api] host:port, and [api] operator_address when set; logs its ready line
    return 0


def register(command: Command) -> None:
    command("cdc", cmd_cdc, "capture row changes from the replication slot into Kafka").add_argument(
        "--accept-lost-changes", action="store_true",
        help="for this start only: create the slot anew although it vanished (or the server is another cluster), "
             "skipping the changes since the last confirmed position")
    command("publisher", cmd_publisher, "deliver events from Kafka as signed webhooks")
    command("api", cmd_api, "serve the management API ([api] host and port)")
