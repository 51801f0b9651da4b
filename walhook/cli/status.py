"""``walhook status``: one screen for an operator, from the store and the servers or through the API."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import orjson

from models.events import parse_time
from walhook.cli.common import Command, settings_of, store_of
from walhook.cli.remote import api_of


async def cmd_status(args: argparse.Namespace) -> int:
    from control.status import gather_status

    if remote := api_of(args):
        report = await remote.call("GET", "/v1/status")
    else:
        settings = settings_of(args)
        async with store_of(args) as store:
            report = await gather_status(settings.source, settings.kafka, store, settings.entities)
    if args.json:
        print(orjson.dumps(report, default=str).decode())
        return 0
    print("\n".join(render_organization(report) if "organization" in report else render(report)))
    return 0


def render_organization(report: dict[str, Any]) -> list[str]:
    """The part of the status an organization's key reads (``GET /v1/status`` with that key)."""
    usage = report["usage"]
    return [f"organization {report['organization']} at {_time(report['at'])}", "",
            *_integrations(report["integrations"]), "", *_jobs(report["replay_jobs"]), "",
            f"manual actions: {usage['actions_last_minute']} of {usage['actions_per_minute']} in the last minute; "
            f"delivery log in 24 h: {usage['log_mb_24h']} MB of {usage['log_mb_quota']} MB"]


def render(report: dict[str, Any]) -> list[str]:
    """The report as lines for a terminal (pure)."""
    return [*slot_lines(report.get("slot")), "", *_group(report.get("consumer_group")), "",
            *_integrations(report["integrations"]), "", *_jobs(report["replay_jobs"]), "",
            _log(report["delivery_log"]), *_busiest(report.get("busiest_organizations") or []),
            *_unowned(report.get("entities_without_organization") or [])]


def slot_lines(slot: dict[str, Any] | None) -> list[str]:
    if slot is None:
        return ["slot: no [source] configured"]
    idle = [f"  inactive slot {s['name']} holds {_bytes(s['held_bytes'])} of WAL (drop it with "
            f"SELECT pg_drop_replication_slot('{s['name']}') if nothing will stream from it again)"
            for s in slot.get("inactive_slots", [])]
    if "error" in slot:
        return [f"slot {slot.get('name', '')}: {slot['error']}".replace("slot : ", "slot: "), *idle]
    heartbeat = slot.get("heartbeat_age_seconds")
    failover = slot.get("failover_slot")
    return [f"slot {slot['name']}: {'active' if slot['active'] else 'INACTIVE (no walhook cdc streams from it)'}, "
            f"lag {_bytes(slot['lag_bytes'])}, confirmed {slot['confirmed_lsn']}, last report "
            f"{_seconds(slot.get('last_report_seconds'))} ago, heartbeat "
            + (f"{_seconds(heartbeat)} ago" if heartbeat is not None else "age unknown (set [source] "
               "metrics_address)"),
            f"failover: {slot.get('failover', '-')} (failover slot: "
            f"{'yes' if failover else 'no' if failover is False else '-'})",
            *(f"  standby {s['standby']}: {'ready' if s['ready'] else s['reason']}" for s in slot.get("standbys", [])),
            *idle]


def _group(group: dict[str, Any] | None) -> list[str]:
    if group is None:
        return ["consumer group: no [kafka] configured"]
    if "error" in group:
        return [f"consumer group: {group['error']}"]
    lines = [f"consumer group {group['group']} on {group['topic']}: lag {group['lag']}"]
    lines += [f"  partition {p['partition']:<3} committed {p['committed'] if p['committed'] is not None else '-':<10} "
              f"end {p['end']:<10} lag {p['lag']}" for p in group["partitions"]]
    return lines + ([f"  warning: {group['partitions_warning']}"] if group.get("partitions_warning") else [])


def _integrations(rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{'INTEGRATION':<12} {'ORGANIZATION':<16} {'STATE':<9} {'PENDING':>8} {'FILTERED':>9}  "
             f"{'FAILING SINCE':<20} NEXT RETRY"]
    for row in rows:
        state = "enabled" if row["enabled"] else "disabled"
        lines.append(f"{row['id']:<12} {row['organization_id']:<16} {state:<9} {row['pending']:>8} "
                     f"{row.get('filtered', 0):>9}  {_time(row['failing_since']):<20} {_time(row['next_retry'])}")
    return lines if rows else ["integrations: none"]


def _jobs(jobs: list[dict[str, Any]]) -> list[str]:
    if not jobs:
        return ["replay jobs: none running"]
    return ["replay jobs running:"] + [f"  job {j['id']} (integration {j['integration_id']}, {j['reason']}): "
                                       f"{j['scanned']} scanned, {j['scheduled']} scheduled" for j in jobs]


def _log(size: dict[str, Any]) -> str:
    return (f"delivery log: {_bytes(size['total_bytes'])} (deliveries {_bytes(size['deliveries_bytes'])}, about "
            f"{size['deliveries_rows']:,} rows; attempts {_bytes(size['attempts_bytes'])}, about "
            f"{size['attempts_rows']:,} rows in {size['attempt_partitions']} partitions)")


def _busiest(rows: list[dict[str, Any]]) -> list[str]:
    """The organizations writing the most log, against the limits their manual actions meet (see Security)."""
    return ["busiest organizations (log written in 24 h, manual actions in the last minute):",
            *(f"  {row['organization_id']:<24} {_bytes(int(row['log_bytes_24h'])):>10}  "
              f"{row['actions_last_minute']} actions" for row in rows)] if rows else []


def _unowned(keys: list[str]) -> list[str]:
    return [f"entities whose events reach no organization (set organization_column or organization, or [source] "
            f"default_organization): {', '.join(keys)}"] if keys else []


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _time(value: object) -> str:
    if value is None:
        return "-"
    moment = value if isinstance(value, datetime) else parse_time(str(value))
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def register(command: Command) -> None:
    command("status", cmd_status, "slot, consumer lag, integrations, replay jobs and the delivery log's size")
