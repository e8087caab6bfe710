"""Where `doctor` looks at the machine: sysfs, /dev, /proc, `modinfo` and the hailo_platform module.

Every probe goes through a `Probes` value so tests can point it at a fake machine (a temporary
folder laid out like /sys, /dev and /proc, and the hailo_platform test double) and simulate a
driver/library mismatch, a missing device node or a device held by another process.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

SERVICE_NAME = "hailort_service"


def _import_hailo_platform() -> ModuleType:
    return importlib.import_module("hailo_platform")


def _run_modinfo() -> str | None:
    """`modinfo hailo_pci` output, or None when modinfo or the module is not there."""
    tool = shutil.which("modinfo") or next((p for p in ("/sbin/modinfo", "/usr/sbin/modinfo") if os.path.exists(p)), None)
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, "hailo_pci"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


@dataclass(frozen=True)
class Holder:
    """A process with a /dev/hailo* node open."""

    pid: int
    name: str
    node: str


@dataclass(frozen=True)
class Probes:
    sys_dir: Path = Path("/sys")
    dev_dir: Path = Path("/dev")
    proc_dir: Path = Path("/proc")
    import_hailo: Callable[[], ModuleType] = _import_hailo_platform
    modinfo: Callable[[], str | None] = _run_modinfo
    pid: int = field(default_factory=os.getpid)

    def driver_version(self) -> tuple[str | None, str]:
        """(hailo_pci version, where it was read) from sysfs, else from modinfo."""
        sysfs = self.sys_dir / "module" / "hailo_pci" / "version"
        try:
            return sysfs.read_text().strip() or None, str(sysfs)
        except OSError:
            pass
        text = self.modinfo()
        if text:
            match = re.search(r"^version:\s*(\S+)", text, re.M)
            if match:
                return match.group(1), "modinfo hailo_pci"
        return None, f"{sysfs} (absent) and modinfo hailo_pci"

    def device_nodes(self) -> list[Path]:
        return sorted(p for p in self.dev_dir.glob("hailo*") if not p.is_dir())

    def _processes(self) -> list[Path]:
        try:
            return [p for p in self.proc_dir.iterdir() if p.name.isdigit()]
        except OSError:
            return []

    @staticmethod
    def _name(proc: Path) -> str:
        try:
            return (proc / "comm").read_text().strip()
        except OSError:
            return "?"

    def holders(self, nodes: list[Path]) -> list[Holder]:
        """Other processes with one of `nodes` open (links in /proc/<pid>/fd); unreadable ones are skipped."""
        wanted = {str(n) for n in nodes} | {os.path.realpath(n) for n in nodes}
        found = []
        for proc in self._processes():
            if int(proc.name) == self.pid:
                continue
            try:
                links = list((proc / "fd").iterdir())
            except OSError:
                continue
            for link in links:
                try:
                    target = os.readlink(link)
                except OSError:
                    continue
                if target in wanted:
                    found.append(Holder(int(proc.name), self._name(proc), target))
                    break
        return found

    def service_pid(self) -> int | None:
        """The pid of a running hailort_service, if any."""
        for proc in self._processes():
            if self._name(proc) == SERVICE_NAME:
                return int(proc.name)
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if os.path.basename(cmdline.decode(errors="replace")) == SERVICE_NAME:
                return int(proc.name)
        return None
