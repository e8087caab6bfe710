"""The doctor report as JSON and as markdown, naming everything a bug report needs: HailoRT, driver,
firmware, device, HEF hashes and the host."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict
from typing import Any

from hailo_immich_cli import __version__
from hailo_immich_cli.doctor.checks import Check, Facts, all_passed

MARKS = {"pass": "ok", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def host_facts() -> dict[str, Any]:
    return {
        "hailo_immich": __version__,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "machine": platform.machine(),
        "kernel": platform.release(),
    }


def build_report(checks: list[Check], facts: Facts, placement: list[dict[str, Any]], compare: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "ok": all_passed(checks) and (compare is None or all(c.get("verdict") in ("agree", "no-reference") for c in compare)),
        "environment": {**asdict(facts), "host": host_facts()},
        "checks": [c.as_dict() for c in checks],
        "placement": placement,
    }
    if compare is not None:
        report["compare"] = compare
    return report


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    host = env["host"]
    lines = [
        "## hailo-immich doctor",
        "",
        f"- hailo-immich {host['hailo_immich']}, Python {host['python']}, {host['os']} ({host['machine']})",
        f"- HailoRT {env['hailort'] or 'not installed'}{' (EMULATED: test double)' if env['emulated'] else ''}, "
        f"hailo_pci driver {env['driver'] or 'not loaded'}, firmware {env['firmware'] or 'unknown'}",
        f"- device: {env['device_arch'] or 'none'} {env['device_id'] or ''}".rstrip(),
    ]
    for recipe_id, hef in sorted(env["hefs"].items()):
        lines.append(f"- HEF {recipe_id}: {hef.get('file', '?')} arch {hef.get('hw_arch', '?')} sha256 {hef.get('sha256', '?')}")
    lines += ["", "| check | result | detail | fix |", "|---|---|---|---|"]
    for c in report["checks"]:
        lines.append(f"| {_cell(c['id'])} | {MARKS[c['status']]} | {_cell(c['detail'])} | {_cell(c['fix'])} |")
    lines += ["", "| Immich task | model | runs on | recipe | note |", "|---|---|---|---|---|"]
    for p in report["placement"]:
        lines.append(f"| {p['immich']} | {p['model']} | {p['backend'] or 'refused'} | {p['recipe'] or ''} | {_cell(p['note'])} |")
    if "compare" in report:
        lines += ["", "| Hailo recipe | CPU reference | agreement | verdict | cause | fix |", "|---|---|---|---|---|---|"]
        for c in report["compare"]:
            metrics = ", ".join(f"{k} {v}" for k, v in c.get("metrics", {}).items())
            lines.append(f"| {c['recipe']} | {c.get('reference') or ''} | {_cell(metrics)} | {c['verdict']} | "
                         f"{_cell(c.get('cause') or '')} | {_cell(c.get('fix') or '')} |")
    lines += ["", f"**{'all checks pass' if report['ok'] else 'problems found'}**", ""]
    return "\n".join(lines)
