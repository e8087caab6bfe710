"""The `hailo-immich` command: a thin Typer app. Each command lives in hailo_immich_cli/commands/.

A command module registers itself by defining `register(app)`; cli.py finds them all, so adding
a command never edits this file.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Optional

import typer

from hailo_immich_cli import __version__, commands

app = typer.Typer(
    name="hailo-immich",
    help="Immich's machine-learning jobs (CLIP, faces, OCR) on a Hailo-8/8L NPU, or the CPU.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hailo-immich {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Run `hailo-immich COMMAND --help` for each command's options."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    app()
