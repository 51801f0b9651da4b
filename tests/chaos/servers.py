"""Servers of one chaos scenario: its own Postgres and broker, in a directory of its own.

Scenarios restart servers, so they never use the session's shared stack. The source tables live
in database ``app``, walhook's store in database ``store`` on the same server: the store can be
made unavailable (``ALLOW_CONNECTIONS false``) while the source keeps streaming.

The broker keeps its data across a restart only with S3 storage (the wheel's tansu has no
Postgres storage). ``persistent_broker_reason`` says what is missing; an S3 endpoint comes from
``WALHOOK_CHAOS_S3`` (URL of an S3-compatible server; bucket ``tansu`` is created) or from a
``moto_server`` command (``pip install 'moto[server]'``) started here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from walhook.stack import KafkaBroker, PostgresServer, free_port, spawn, stop_process, wait_for_port

S3_BUCKET = "tansu"


def moto_command() -> str | None:
    """``moto_server`` next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


def persistent_broker_reason() -> str | None:
    """None when a broker that survives a restart can be run here; otherwise why not."""
    if os.environ.get("WALHOOK_CHAOS_S3") or moto_command():
        return None
    return ("no persistent broker: the bundled tansu has memory and S3 storage only (postgres:// is not compiled "
            "in); set WALHOOK_CHAOS_S3 to an S3-compatible endpoint or install 'moto[server]'")


@dataclass
class ChaosServers:
    """Postgres and the broker for one scenario; ``persistent`` puts the broker's data in S3."""

    directory: Path
    persistent: bool = False
    postgres: PostgresServer | None = None
    broker: KafkaBroker | None = None
    _s3: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> ChaosServers:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.postgres = PostgresServer(self.directory / "postgres" / "data", settings={"wal_sender_timeout": "10s"})
        self.postgres.start()
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
            conn.execute("CREATE DATABASE store")
        self.broker = KafkaBroker(self.directory / "kafka")
        if self.persistent:
            self.broker.storage, self.broker.env = f"s3://{S3_BUCKET}/", self._object_store()
        self.broker.start()
        return self

    def dsn(self, database: str) -> str:
        assert self.postgres is not None
        return make_conninfo(**{**conninfo_to_dict(self.postgres.dsn), "dbname": database})

    @property
    def bootstrap_servers(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap_servers

    def _object_store(self) -> dict[str, str]:
        """Environment that points tansu at an S3 endpoint with the bucket in place."""
        endpoint = os.environ.get("WALHOOK_CHAOS_S3")
        if not endpoint:
            command = moto_command()
            assert command is not None, persistent_broker_reason()
            port = free_port()
            self._s3 = spawn([command, "-H", "127.0.0.1", "-p", str(port)], self.directory / "s3.log")
            wait_for_port("127.0.0.1", port, 30, self._s3)
            endpoint = f"http://127.0.0.1:{port}"
        _create_bucket(endpoint)
        return {"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "chaos"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "chaos")}

    def stop(self) -> None:
        for server in (self.broker, self.postgres):
            if server is not None:
                server.stop()
        if self._s3 is not None:
            stop_process(self._s3)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def _create_bucket(endpoint: str) -> None:
    """PUT the bucket (an existing one is fine); retried while the server comes up."""
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{S3_BUCKET}", method="PUT"), timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it exists already, or this server wants signed requests: then the bucket must exist
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
