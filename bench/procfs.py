"""Process memory as the kernel reports it, for the benchmarks' RSS columns."""

from __future__ import annotations

import os
from pathlib import Path


def status_mb(pid: int, field: str = "VmHWM") -> float:
    """A ``/proc/<pid>/status`` size in MB: ``VmHWM`` is the peak RSS so far, ``VmRSS`` the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} in /proc/{pid}/status")


def _children(pid: int) -> list[int]:
    """The pids whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """CPU time (user + system) of ``pid``; with ``tree``, also of its ended children and living descendants."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After the ")" that ends the command name, utime, stime, cutime and cstime are fields 11-14.
    own = sum(int(value) for value in fields[11:15 if tree else 13]) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) for child in _children(pid)) if tree else own


def machine_busy_seconds() -> float:
    """CPU seconds spent by everything on this machine (all cores) since boot: not idle, not waiting for I/O."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds per named component between two samples; ``tree`` components include their children."""

    def __init__(self, pids: dict[str, tuple[int, bool]]) -> None:
        self.pids = pids
        self._last = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {name: cpu_seconds(pid, tree) for name, (pid, tree) in self.pids.items()}
        return {**sample, "machine": machine_busy_seconds()}

    def lap(self) -> dict[str, float]:
        """CPU seconds of each component (and of the whole machine) since the previous lap."""
        now = self._sample()
        spent = {name: now[name] - self._last.get(name, 0.0) for name in now}
        self._last = now
        return spent
