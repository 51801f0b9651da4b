"""The walkthrough of Getting started is ``docs/walkthrough.sh``: the page shows exactly its commands, and the
script runs as written, from a clean shell, on the real stack (its own Postgres and broker)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from walhook.stack import free_port

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "walkthrough.sh"


def walkthrough_commands() -> str:
    """The script between its ``# walkthrough`` and ``# end of walkthrough`` lines."""
    text = SCRIPT.read_text()
    return text.split("\n# walkthrough\n", 1)[1].split("# end of walkthrough\n", 1)[0]


PAGE = ROOT / "docs" / "getting-started.md"  # the page a user reads the walkthrough on


def test_the_getting_started_page_shows_exactly_the_walkthrough_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", PAGE.read_text(), re.DOTALL)
    assert walkthrough_commands() in blocks, f"{PAGE.relative_to(ROOT)}'s walkthrough block differs from {SCRIPT.name}"


PORT_TAKEN = "Address already in use"


def run_walkthrough(server_dir: Path, attempts: int = 3) -> tuple[int, str]:
    """Run the script (its exit code and output). The ports are picked free just before, so another test may take
    one first: then the API cannot listen and the script waits for it in vain; only that is tried again."""
    for attempt in range(attempts):
        workdir = server_dir / f"attempt{attempt}"  # its files: pytest's own temp root would lock Postgres out
        workdir.mkdir()
        env = {key: value for key, value in os.environ.items() if not key.startswith("WALHOOK_")}
        env.update(API_PORT=str(free_port()), RECEIVER_PORT=str(free_port()), TMPDIR=str(workdir))
        script = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = script.communicate(timeout=150)
            return script.returncode, output
        except subprocess.TimeoutExpired:
            os.killpg(script.pid, signal.SIGKILL)
            output, _ = script.communicate()
            logs = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in sorted(workdir.rglob("*.log")))
            if PORT_TAKEN not in logs or attempt == attempts - 1:
                pytest.fail(f"the walkthrough did not finish in 150 s:\n{output}\n{logs}")
    raise AssertionError("unreachable")


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("jq") is None,
                    reason="the walkthrough uses curl and jq, as a reader would")
def test_the_walkthrough_runs_as_written(server_dir: Path) -> None:
    returncode, output = run_walkthrough(server_dir)
    assert returncode == 0, output
    for ready in (r"walhook\.cdc: ready: streaming slot walhook of .* into topic walhook\.events",
                  r"walhook\.publisher: ready: consuming topic walhook\.events as group walhook-publisher",
                  r"walhook\.api: ready: management API on http://127\.0\.0\.1:\d+"):
        assert re.search(ready, output), output
    assert "wrote walhook.toml with 1 [[entities]]: public.packet_comments" in output
    assert re.search(r"^verified acme created packet_comments/1$", output, re.MULTILINE), output
    assert re.search(r"^verified acme updated packet_comments/1$", output, re.MULTILINE), output
    # Succeeded, after one attempt or more: on a loaded machine the first may time out and be retried.
    assert re.search(r'"entity_path":"packet_comments/1","operation":"created","status":"succeeded","attempts":\d+',
                     output), output
    assert '{"status":"succeeded","attempts":[{"number":1,' in output
    integration = re.search(r'^\{"id":(\d+),"url":"http://127\.0\.0\.1:\d+/hooks/acme"', output, re.MULTILINE)
    assert integration, output
    assert re.search(rf"delivery 1 \(evt_\w+_i{integration.group(1)}\) scheduled for one more attempt", output), output
    assert re.search(r"replay job 1 .*: done, \d+ scanned, 3 scheduled", output), output
    assert re.search(r"^slot walhook: active, lag \d+", output, re.MULTILINE), output
    assert re.search(rf"^{integration.group(1)} +acme +enabled +0 ", output, re.MULTILINE), output
    assert re.search(r"^delivery log: .* in \d+ partitions\)$", output, re.MULTILINE), output
