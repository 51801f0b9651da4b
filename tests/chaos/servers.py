"""Servers of one chaos scenario: its own Postgres and broker, in a directory of its own.

Scenarios restart servers, so they never use the session's shared stack. The source tables live
in database ``app``, walhook's store in database ``store`` on the same server: the store can be
made unavailable (``ALLOW_CONNECTIONS false``) while the source keeps streaming.

The broker restart needs a broker that keeps its data, and the bundled tansu cannot be one here:
it is built without Postgres storage (``--storage-engine postgres://...`` fails with
``FeatureNotEnabled``), memory storage forgets everything, and its S3 storage (tried against
``moto_server``) lists a partition's objects on every fetch and, after a restart, answered the
consumer group's offset fetch with a malformed response - the publisher never resumed. So that
scenario runs against an external broker: ``WALHOOK_TEST_KAFKA`` names it and
``WALHOOK_CHAOS_KAFKA_RESTART`` is a shell command that restarts it, e.g.
``docker compose -f docker/compose.yaml restart kafka`` (Apache Kafka, data on its volume).

With ``standby``, a physical standby of the same binaries follows the primary (``pg_basebackup``,
physical slot ``standby1``), set up for failover slots: ``sync_replication_slots`` and
``hot_standby_feedback`` on the standby, ``synchronized_standby_slots`` and synchronous commit to it
on the primary (a commit that returned is on the standby too, so a promotion loses none). DSNs then
name both hosts with ``target_session_attrs=primary``: whoever is primary is found after a promotion.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from walhook.stack import KafkaBroker, PostgresServer

STANDBY_SLOT = "standby1"  # the physical slot on the primary, also the standby's application_name


def persistent_broker_reason() -> str | None:
    """None when a broker that survives a restart is available; otherwise why not."""
    if os.environ.get("WALHOOK_TEST_KAFKA") and os.environ.get("WALHOOK_CHAOS_KAFKA_RESTART"):
        return None
    return ("needs a broker that keeps its data: set WALHOOK_TEST_KAFKA and WALHOOK_CHAOS_KAFKA_RESTART (e.g. Apache "
            "Kafka from docker/compose.yaml); the bundled tansu has no Postgres storage and its S3 storage did not "
            "resume consumer groups after a restart")


@dataclass
class ChaosServers:
    """Postgres and the broker for one scenario; ``persistent``: the external broker, restarted by command."""

    directory: Path
    persistent: bool = False
    with_standby: bool = False
    postgres: PostgresServer | None = None
    standby: PostgresServer | None = None
    broker: KafkaBroker | None = None

    def start(self) -> ChaosServers:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.postgres = PostgresServer(self.directory / "postgres" / "data", settings={"wal_sender_timeout": "10s"})
        self.postgres.start()
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
            conn.execute("CREATE DATABASE store")
        if self.with_standby:
            self._start_standby()
        if not self.persistent:
            self.broker = KafkaBroker(self.directory / "kafka")
            self.broker.start()
        return self

    def _start_standby(self) -> None:
        assert self.postgres is not None
        self.standby = PostgresServer(self.directory / "standby" / "data", settings={
            "wal_sender_timeout": "10s", "sync_replication_slots": "on", "hot_standby_feedback": "on"})
        self.standby.clone_from(self.postgres, STANDBY_SLOT, STANDBY_SLOT)
        self.standby.start()
        # After the copy, so the standby does not inherit them (a promoted node waiting for a standby slot
        # that does not exist would stall decoding; one waiting for a synchronous standby, every commit).
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'")
            conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_SLOT}'")
            conn.execute("SELECT pg_reload_conf()")

    def dsn(self, database: str, find_primary: bool = True) -> str:
        """With a standby, both hosts; ``find_primary`` False leaves out ``target_session_attrs`` (walhook's
        own configuration: walhook must add it by itself)."""
        assert self.postgres is not None
        params = {**conninfo_to_dict(self.postgres.dsn), "dbname": database}
        if self.standby is not None:
            params.update(host="127.0.0.1,127.0.0.1", port=f"{self.postgres.port},{self.standby.port}")
            if find_primary:
                params["target_session_attrs"] = "primary"
        return make_conninfo(**params)

    def node_dsn(self, server: PostgresServer, database: str = "postgres") -> str:
        """One server of the pair, whatever its role."""
        return make_conninfo(**{**conninfo_to_dict(server.dsn), "dbname": database})

    @property
    def bootstrap_servers(self) -> str:
        if self.persistent:
            return os.environ["WALHOOK_TEST_KAFKA"]
        assert self.broker is not None
        return self.broker.bootstrap_servers

    def stop_broker(self) -> None:
        if self.persistent:
            subprocess.run(os.environ["WALHOOK_CHAOS_KAFKA_RESTART"], shell=True, check=True, capture_output=True)
        else:
            assert self.broker is not None
            self.broker.stop()

    def start_broker(self) -> None:
        """The local broker starts again on its port; an external one was restarted by ``stop_broker``."""
        if not self.persistent:
            assert self.broker is not None
            self.broker.start()

    def stop(self) -> None:
        for server in (self.broker, self.standby, self.postgres):
            if server is not None:
                server.stop()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
