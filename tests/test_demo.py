"""`walhook demo --seconds N`: verified webhooks on screen, exit 0, nothing left running."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.test_stack import wait_until_gone


def test_demo_shows_verified_webhooks_and_cleans_up(server_dir: Path) -> None:
    directory = server_dir / "demo"
    done = subprocess.run([sys.executable, "-m", "walhook", "demo", "--seconds", "12", "--dir", str(directory)],
                          capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    verified = [line for line in done.stdout.splitlines() if re.match(r"\d\d:\d\d:\d\d  verified ", line)]
    organizations = {line.split()[2] for line in verified}
    operations = {line.split()[3] for line in verified}
    assert organizations == {"acme", "globex"}, done.stdout
    assert {"created", "updated"} <= operations, done.stdout
    summary = re.search(r"(\d+) SQL changes written, (\d+) webhooks verified, 0 rejected; (\d+) changes? no "
                        r"integration subscribed to \(globex projects created x\d+\)(?:; (\d+) changes? still in "
                        r"flight when the demo stopped)?$", done.stdout, re.MULTILINE)
    assert summary and int(summary.group(2)) == len(verified) >= 10, done.stdout
    written, unsubscribed, in_flight = int(summary.group(1)), int(summary.group(3)), int(summary.group(4) or 0)
    assert written == len(verified) + unsubscribed + in_flight, done.stdout  # every change accounted for
    assert wait_until_gone(str(directory)) == []


def test_sigterm_stops_the_demo_cleanly(server_dir: Path) -> None:
    directory = server_dir / "demo-term"
    demo = subprocess.Popen([sys.executable, "-m", "walhook", "demo", "--dir", str(directory)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    assert demo.stdout is not None
    for line in demo.stdout:  # wait for the first verified webhook
        if re.match(r"\d\d:\d\d:\d\d  verified ", line):
            break
    demo.send_signal(signal.SIGTERM)
    rest = demo.stdout.read()
    assert demo.wait(timeout=60) == 0
    assert re.search(r"webhooks verified, 0 rejected", rest), rest
    assert wait_until_gone(str(directory)) == []
