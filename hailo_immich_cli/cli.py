"""The `hailo-immich` command: a thin Typer app. Each command lives in hailo_immich_cli/commands/.

A command module registers itself by defining `register(app)`; cli.py finds them all, so adding
a command never edits this file. `main` installs the Ctrl-C/SIGTERM handlers before it imports
anything heavy, so a signal during start-up also ends cleanly (exit 130/143, no traceback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from hailo_immich_cli.commands import _signals

if TYPE_CHECKING:
    import typer

_app: "typer.Typer | None" = None


def build_app() -> "typer.Typer":
    import importlib
    import pkgutil

    import typer

    from hailo_immich_cli import __version__, commands
    from hailo_immich_cli.commands._help import PlainHelpGroup, use_plain_help

    app = typer.Typer(
        name="hailo-immich",
        cls=PlainHelpGroup,
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

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    use_plain_help(app)
    return app


def __getattr__(name: str) -> Any:
    """`from hailo_immich_cli.cli import app` builds the app on first use (see the module docstring)."""
    global _app
    if name == "app":
        if _app is None:
            _app = build_app()
        return _app
    raise AttributeError(name)


def main() -> None:
    _signals.install()
    try:
        __getattr__("app")()
    except KeyboardInterrupt as exc:  # during start-up: commands handle their own
        _signals.exit_now(exc)
    except SystemExit:
        signum = _signals.received()
        if signum is not None:  # Typer turns an interrupt during argument parsing into exit 130, even for SIGTERM
            _signals.exit_now(_signals.Interrupted(signum))
        raise
    finally:
        _signals.finishing()
