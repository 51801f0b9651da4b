"""Connection strings that name several hosts: find the primary among them, or reach each one.

Both halves use these: capture streams from the primary and reads each standby's copy of the slot;
the store, when it lives on the same replicated cluster, must write to the primary too.
"""

from __future__ import annotations

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def primary_dsn(dsn: str) -> str:
    """``dsn`` with ``target_session_attrs=primary`` when it names several hosts and says nothing itself."""
    params = conninfo_to_dict(dsn)
    if "," not in str(params.get("host", "")) or "target_session_attrs" in params:
        return dsn
    return make_conninfo(dsn, target_session_attrs="primary")


def hosts_of(dsn: str) -> list[str]:
    """One single-host DSN per host of ``dsn`` (a port list pairs with the host list, one port serves all)."""
    params = conninfo_to_dict(dsn)
    hosts = str(params.get("host", "")).split(",")
    ports = str(params.get("port", "")).split(",")
    params.pop("target_session_attrs", None)
    single = []
    for index, host in enumerate(hosts):
        port = ports[index] if len(ports) == len(hosts) else ports[0]
        single.append(make_conninfo("", **{**params, "host": host, **({"port": port} if port else {})}))
    return single
