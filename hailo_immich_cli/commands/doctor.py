"""`hailo-immich doctor`: check the whole Hailo chain (library, driver, device, HEFs, files, cache),
each result with a one-line fix; `--compare` checks every configured Hailo recipe against its CPU
reference on bundled sample photos and names the recipe setting that fixes a disagreement."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from hailo_immich_cli.commands._common import BackendOption, ModelsDirOption, handle_errors, load_settings
from hailo_immich_cli.doctor.checks import device_ready, planning_session, run_checks
from hailo_immich_cli.doctor.probes import Probes
from hailo_immich_cli.doctor.report import build_report, markdown
from hailo_immich_cli.models.immich_cache import load_recipe_book
from hailo_immich_cli.models.resolve import default_placement

STYLE = {"pass": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[bold red]FAIL[/]", "skip": "[dim]skip[/]"}


def default_probes() -> Probes:
    """The real machine (tests replace this to simulate one)."""
    return Probes()


def _print_checks(out: Console, report: dict) -> None:
    for c in report["checks"]:
        out.print(f"{STYLE[c['status']]} {escape(c['id'])}: {escape(c['detail'])}", soft_wrap=True)
        if c["fix"] and c["status"] != "pass":
            out.print(f"     fix: {escape(c['fix'])}", soft_wrap=True)
    out.print("\n[bold]Where Immich's default models run[/]")
    for p in report["placement"]:
        where = f"{p['backend']} ({p['recipe']})" if p["backend"] else "[red]refused[/]"
        note = f"  [dim]{escape(p['note'])}[/]" if p["note"] else ""
        out.print(f"  {escape(p['immich'])} {escape(p['model'])}: {where}{note}", soft_wrap=True)


def _print_compare(out: Console, rows: list[dict]) -> None:
    out.print("\n[bold]Hailo recipes against their CPU references[/]")
    for row in rows:
        metrics = ", ".join(f"{k} {v}" for k, v in row.get("metrics", {}).items())
        mark = {"agree": "[green]agree[/]", "no-reference": "[dim]n/a[/]"}.get(row["verdict"], f"[bold red]{row['verdict']}[/]")
        out.print(f"  {escape(row['recipe'])} vs {escape(str(row.get('reference')))}: {mark} {escape(metrics)}", soft_wrap=True)
        if row.get("detail"):
            out.print(f"     {escape(row['detail'])}", soft_wrap=True)
        if row.get("cause"):
            out.print(f"     cause: {escape(row['cause'])}", soft_wrap=True)
        if row.get("fix"):
            out.print(f"     fix: {escape(row['fix'])}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def doctor(
        compare: bool = typer.Option(False, "--compare", help="Run every configured Hailo recipe next to its CPU reference on sample photos."),
        fetch: bool = typer.Option(False, "--fetch", help="With --compare: download missing CPU reference models first."),
        recipe: Optional[List[str]] = typer.Option(None, "--recipe", "-r", help="With --compare: only these Hailo recipes."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
        markdown_out: Optional[Path] = typer.Option(None, "--markdown", help="Also write the report as markdown (for a bug report)."),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
        recipes_dir: Optional[Path] = typer.Option(None, "--recipes-dir", help="Extra recipes (env HAILO_IMMICH_RECIPES_DIR)"),
    ) -> None:
        """Check the Hailo chain (library, driver, device, HEFs, model files, Immich cache); exit 0 if all pass."""
        settings = load_settings(backend, models_dir, recipes_dir=recipes_dir, log_level="warning")  # the report, not load notices
        book = load_recipe_book(settings)
        probes = default_probes()
        checks, facts, recipes = run_checks(settings, book, probes)
        placement = [p.as_dict() for p in default_placement(planning_session(settings, book))]
        rows = None
        if compare:
            from hailo_immich_cli.doctor.compare import run_compare

            rows = run_compare(settings, book, recipes, only=recipe or None, fetch=fetch, device_ok=device_ready(checks))
        report = build_report(checks, facts, placement, rows)
        if markdown_out is not None:
            markdown_out.write_text(markdown(report), encoding="utf-8")
        if as_json:
            typer.echo(json.dumps(report, indent=2))
        else:
            out = Console(highlight=False)
            _print_checks(out, report)
            if rows is not None:
                _print_compare(out, rows)
            out.print(f"\n{'[green]all checks pass[/]' if report['ok'] else '[bold red]problems found[/] (fix the first failure first)'}")
        raise typer.Exit(0 if report["ok"] else 1)
