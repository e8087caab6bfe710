"""A simulated host for `doctor`: /sys, /dev and /proc under a temporary folder, and a
hailo_platform module (normally the test double), wired into doctor's Probes."""

from __future__ import annotations

import shutil
from pathlib import Path

from hailo_immich_cli.doctor.probes import Probes


class FakeMachine:
    """/sys, /dev and /proc laid out under a temporary folder."""

    def __init__(self, root: Path, hp):
        self.root, self.hp = root, hp
        for part in ("sys", "dev", "proc"):
            (root / part).mkdir(parents=True, exist_ok=True)

    def driver(self, version: str | None) -> "FakeMachine":
        path = self.root / "sys/module/hailo_pci/version"
        if version is None:
            shutil.rmtree(self.root / "sys/module", ignore_errors=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(version + "\n")
        return self

    def node(self) -> Path:
        node = self.root / "dev/hailo0"
        node.write_bytes(b"")
        return node

    def process(self, pid: int, name: str, holds: Path | None = None) -> None:
        proc = self.root / "proc" / str(pid)
        (proc / "fd").mkdir(parents=True, exist_ok=True)
        (proc / "comm").write_text(name + "\n")
        (proc / "cmdline").write_bytes(f"/usr/bin/{name}\0--flag\0".encode())
        if holds is not None:
            (proc / "fd" / "7").symlink_to(holds)

    def probes(self) -> Probes:
        return Probes(self.root / "sys", self.root / "dev", self.root / "proc", import_hailo=lambda: self.hp, modinfo=lambda: None)
