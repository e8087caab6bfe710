"""`hailo-immich inspect-hef FILE...`: what a HEF holds, read without HailoRT.

Arch, SDK, header and hash, network groups, every input/output with its shape, order, dtype and
quantisation. `--hailort` asks HailoRT (when installed) for the same and reports any difference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hailo_immich_cli.commands._common import stderr_console
from hailo_immich_cli.models.hef import HefFormatError, HefInfo, HefLayer, read_hef

EXIT_BAD_FILE = 2
EXIT_HAILORT_DISAGREES = 3


def _fmt_float(value: float) -> str:
    return f"{value:.6g}"


def _quant(layer: HefLayer) -> str:
    if layer.dtype == "FLOAT32":
        return "-"
    if layer.per_feature is not None:
        return f"per-feature x{len(layer.per_feature[0])}"
    return f"{_fmt_float(layer.qp_scale)} / {_fmt_float(layer.qp_zp)}"


def _print_info(console: Console, info: HefInfo) -> None:
    h = info.header
    hash_state = {True: "[green]ok[/]", False: "[red]MISMATCH[/]", None: "not checked"}[h.hash_ok]
    console.print(f"[bold]{escape(str(info.path))}[/]  ({info.size:,} bytes)")
    console.print(
        f"  arch [bold]{info.hw_arch}[/] ({escape(info.arch_label)}), SDK {escape(info.sdk_version)}, "
        f"header v{h.version}, {h.hash_kind} {hash_state}"
    )
    runs = [label for arch, label in (("HAILO8", "Hailo-8"), ("HAILO8L", "Hailo-8L")) if info.runs_on(arch)]
    console.print(f"  runs on: {', '.join(runs) if runs else '[yellow]neither Hailo-8 nor Hailo-8L[/]'}")
    if info.hailort_4_23_loadable:
        console.print("  HailoRT 4.23: loadable")
    else:
        console.print(f"  HailoRT 4.23: [red]refuses it[/]: {escape('; '.join(info.hailort_4_23_reasons))}")
    for ng in info.network_groups:
        layout = ng.layout + (f", multi-layout {list(ng.partial_layout_bitmaps)}" if ng.multi_layout else "")
        console.print(
            f"  network group [bold]{escape(ng.name)}[/]: {layout}, {ng.contexts} context(s)"
            f"{' (multi-context)' if ng.multi_context else ''}, bottleneck {ng.bottleneck_fps:.1f} FPS, "
            f"latency {ng.latency_s * 1000:.2f} ms"
        )
        table = Table(show_edge=False, pad_edge=False)
        for column in ("dir", "name", "shape", "order", "dtype", "qp scale / zp", "limvals", "original names"):
            table.add_column(column, overflow="fold", no_wrap=column in ("dir", "shape", "order", "dtype"))
        for layer in ng.inputs + ng.outputs + ng.core_outputs:
            direction = "core out" if layer in ng.core_outputs else ("in" if layer.direction == "input" else "out")
            limvals = "-" if layer.dtype == "FLOAT32" else f"[{_fmt_float(layer.limvals_min)}, {_fmt_float(layer.limvals_max)}]"
            table.add_row(direction, escape(layer.name), "x".join(map(str, layer.shape)), layer.host_order, layer.dtype,
                          _quant(layer), limvals, escape(", ".join(layer.original_names)))
        console.print(table)
        for op in ng.post_process_ops:
            console.print(f"  host post-process: {op.op} ({op.type}) -> {escape(op.name)} from {escape(', '.join(op.inputs))}")


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)


def cross_check(info: HefInfo, hp) -> list[str]:
    """Differences between our reading and HailoRT's vstream infos (empty list = agreement)."""
    hef = hp.HEF(str(info.path))
    problems: list[str] = []
    names = list(hef.get_network_group_names())
    ours_names = [ng.name for ng in info.network_groups]
    if sorted(names) != sorted(ours_names):
        problems.append(f"network groups: HailoRT {names}, hef.py {ours_names}")
    for ng in info.network_groups:
        if ng.name not in names:
            continue
        for kind, theirs, ours in (
            ("input", hef.get_input_vstream_infos(ng.name), ng.inputs),
            ("output", hef.get_output_vstream_infos(ng.name), ng.outputs),
        ):
            by_name = {v.name: v for v in theirs}
            if sorted(by_name) != sorted(layer.name for layer in ours):
                problems.append(f"{ng.name} {kind}s: HailoRT {sorted(by_name)}, hef.py {sorted(l.name for l in ours)}")
                continue
            for layer in ours:
                v = by_name[layer.name]
                if tuple(v.shape) != tuple(layer.shape):
                    problems.append(f"{layer.name}: shape HailoRT {tuple(v.shape)}, hef.py {layer.shape}")
                if layer.per_feature is None and layer.dtype != "FLOAT32":
                    q = v.quant_info
                    if not (_close(q.qp_scale, layer.qp_scale) and _close(q.qp_zp, layer.qp_zp)):
                        problems.append(f"{layer.name}: qp HailoRT {q.qp_scale}/{q.qp_zp}, hef.py {layer.qp_scale}/{layer.qp_zp}")
    return problems


def register(app: typer.Typer) -> None:
    @app.command("inspect-hef")
    def inspect_hef(
        files: List[Path] = typer.Argument(..., help="HEF file(s) to describe.", show_default=False),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON document (a list, one entry per file)."),
        hailort: bool = typer.Option(False, "--hailort", help="Also read each file with HailoRT (if installed) and compare."),
        no_verify: bool = typer.Option(False, "--no-verify", help="Skip the integrity hash (faster on big files)."),
    ) -> None:
        """Describe HEF files without HailoRT: arch, SDK, inputs/outputs, quantisation."""
        out = Console(highlight=False)
        if not out.is_terminal:  # piped or captured: do not squeeze layer names into 80 columns
            out = Console(highlight=False, width=max(out.width, 180))
        err = stderr_console()
        hp = None
        hailort_note = None
        if hailort:
            try:
                import hailo_platform as hp  # type: ignore[no-redef]
            except ImportError as exc:
                hailort_note = f"HailoRT (hailo_platform) is not installed here ({exc}): the --hailort cross-check was skipped"
                err.print(f"[yellow]note:[/] {escape(hailort_note)}", soft_wrap=True)
        code = 0
        documents = []
        for path in files:
            try:
                info = read_hef(path, verify=not no_verify)
            except HefFormatError as exc:
                code = max(code, EXIT_BAD_FILE)
                documents.append({"file": str(path), "valid": False, "error": str(exc)})
                err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
                continue
            doc = info.as_dict()
            problems = None
            if hp is not None:
                try:
                    problems = cross_check(info, hp)
                except Exception as exc:  # HailoRT's own exception types
                    problems = [f"HailoRT could not read it: {type(exc).__name__}: {exc}"]
                doc["hailort_cross_check"] = {"version": getattr(hp, "__version__", "?"), "differences": problems}
                if problems:
                    code = max(code, EXIT_HAILORT_DISAGREES)
            elif hailort_note:
                doc["hailort_cross_check"] = {"skipped": hailort_note}
            documents.append(doc)
            if not as_json:
                _print_info(out, info)
                if problems == []:
                    out.print(f"  HailoRT {escape(str(getattr(hp, '__version__', '?')))} agrees (names, shapes, quantisation)")
                elif problems:
                    for problem in problems:
                        err.print(f"[red]HailoRT differs:[/] {escape(problem)}", soft_wrap=True)
                out.print()
        if as_json:
            typer.echo(json.dumps(documents, indent=2))
        raise typer.Exit(code)
