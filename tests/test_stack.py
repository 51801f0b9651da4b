"""The local stack: real servers that never outlive their owner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from walhook.stack import LocalStack


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (read from /proc, no tools needed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until_gone(text: str, timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def test_start_gives_logical_postgres_and_a_broker_and_stop_leaves_nothing(server_dir: Path) -> None:
    directory = server_dir / "own-stack"
    with LocalStack(directory) as stack:
        with psycopg.connect(stack.dsn or "") as conn:
            assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
            assert int(conn.execute("SHOW max_replication_slots").fetchone()[0]) >= 10  # type: ignore[index]
        assert stack.kafka is not None and stack.kafka.process is not None
        assert stack.kafka.process.poll() is None
        assert processes_mentioning(str(directory))
    assert wait_until_gone(str(directory)) == []
    stack.stop()  # idempotent


def test_servers_die_with_their_owner_even_on_kill_9(server_dir: Path) -> None:
    directory = server_dir / "orphan-check"
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from walhook.stack import LocalStack; "
         f"LocalStack(Path({str(directory)!r})).start(); print('up', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1])
    assert owner.stdout is not None and owner.stdout.readline().strip() == b"up"
    assert processes_mentioning(str(directory))
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert wait_until_gone(str(directory)) == []


def test_reusing_existing_servers_starts_nothing(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "reuse", dsn="postgresql://example/db", bootstrap_servers="127.0.0.1:9")
    with stack:
        assert stack.postgres is None and stack.kafka is None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                    reason="creating a system user needs root and useradd")
def test_the_system_user_is_made_once_while_others_add_users() -> None:
    """Starts preparing the Postgres user at once, while a package install held /etc/passwd's lock, once
    failed (useradd: name taken, or passwd locked): every start must get the same user."""
    name = f"walhook_t{os.getpid() % 100000}"
    script = ("import sys; from walhook.stack import _ensure_system_user, _preparing\n"
              "with _preparing():\n    print(_ensure_system_user(sys.argv[1]).pw_uid)\n")
    lock = Path("/etc/passwd.lock")  # what useradd and adduser take (shadow's commonio lock)
    try:
        lock.write_text(f"{os.getpid()}")  # a live process holds it, as a package install would
        starts = [subprocess.Popen([sys.executable, "-c", script, name], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True) for _ in range(4)]
        time.sleep(1.0)  # the first has tried useradd, found /etc/passwd locked, and waits; the rest queue
        lock.unlink()
        results = [start.communicate(timeout=60) for start in starts]
        assert [start.returncode for start in starts] == [0, 0, 0, 0], [err for _, err in results]
        uids = {out.strip() for out, _ in results}
        assert len(uids) == 1 and uids.pop().isdigit()
    finally:
        lock.unlink(missing_ok=True)
        subprocess.run(["userdel", name], capture_output=True, check=False)
