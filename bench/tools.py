"""Reference tools of the delivery benchmark: nginx answering 200 at once, and wrk posting to it.

Both come from Debian's packages (``apt-get install -y nginx wrk``). ``ensure_tools`` installs
them when the benchmark runs as root and they are missing, and otherwise stops with a message
naming exactly what to install. nginx runs with a configuration generated in the run's own
directory (pid file, logs and temp files there, no access log), so it needs no system setup.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from walhook.stack import free_port, spawn, stop_process, wait_for_port

PACKAGES = {"nginx": "nginx", "wrk": "wrk"}  # command -> Debian package
# nginx lives in /usr/sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

NGINX_CONFIG = """daemon off;
master_process on;
worker_processes {workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200; }}
    }}
}}
"""

WRK_SCRIPT = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "evt_0000000000000001_000000_i1"
wrk.headers["webhook-timestamp"] = "1767225600"
wrk.headers["webhook-signature"] = "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4="
"""


def tool(command: str) -> str | None:
    """The full path of ``command``, or None when it is not installed."""
    return shutil.which(command, path=_SEARCH_PATH)


def ensure_tools(commands: list[str]) -> None:
    """Install the missing ``commands`` with apt-get when root; otherwise exit saying what to install."""
    missing = [command for command in commands if tool(command) is None]
    if not missing:
        return
    packages = " ".join(PACKAGES[command] for command in missing)
    if os.geteuid() != 0:
        raise SystemExit(f"the delivery benchmark needs {', '.join(missing)}: run `sudo apt-get install -y "
                         f"{packages}` (Debian/Ubuntu packages), or pass --receiver python to do without nginx")
    print(f"installing {packages} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", *packages.split()], env=env, check=False).returncode != 0:
        # A fresh container has no package lists yet.
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", *packages.split()], env=env, check=True)


@dataclass
class Nginx:
    """nginx on 127.0.0.1:``port`` answering every request with an empty 200, config and files in ``directory``."""

    directory: Path
    workers: int = 1
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.directory / "nginx.conf"
        config.write_text(NGINX_CONFIG.format(directory=self.directory, port=self.port, workers=self.workers))
        binary = tool("nginx") or "nginx"
        self.process = spawn([binary, "-p", str(self.directory), "-c", str(config), "-e",
                              str(self.directory / "error.log")], self.directory / "nginx.out")
        wait_for_port("127.0.0.1", self.port, 10.0, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def lua_string(data: bytes) -> str:
    """``data`` as a Lua string literal (decimal escapes for anything but plain printable ASCII)."""
    return '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b}" for b in data) + '"'


def run_wrk(url: str, body: bytes, connections: int, seconds: float, directory: Path, threads: int = 2) -> float:
    """Requests/s of ``wrk`` POSTing ``body`` to ``url`` over ``connections`` kept-alive connections."""
    script = directory / "post.lua"
    script.write_text(WRK_SCRIPT.format(body=lua_string(body)))
    done = subprocess.run([tool("wrk") or "wrk", "-t", str(min(threads, connections)), "-c", str(connections),
                           "-d", f"{seconds:g}s", "-s", str(script), url],
                          capture_output=True, text=True, check=True, timeout=seconds + 60)
    found = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
    if found is None or non_2xx is not None:
        raise RuntimeError(f"wrk did not report a clean run:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))
