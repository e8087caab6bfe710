"""The `hailo-immich` command: a thin Typer app. Each command lives in hailo_immich_cli/commands/.

A command module registers itself by defining `register(app)`; cli.py finds them all, so adding
a command never edits this file. A command is named after its module (`fetch-models` is
`commands/fetch_models.py`), so `main` imports only the module of the command it runs: the other
commands' imports (ONNX Runtime, OpenCV, the server, the benchmarks) would cost every one-off
command a few hundred milliseconds. Top-level help and unknown names build the whole app. `main` installs the Ctrl-C/SIGTERM handlers before it imports
anything heavy, so a signal during start-up also ends cleanly (exit 130/143, no traceback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from hailo_immich_cli.commands import _signals

if TYPE_CHECKING:
    import typer

_app: "typer.Typer | None" = None


def build_app(only: str | None = None) -> "typer.Typer":
    """The app with every command, or with only the command module `only` (a name from `command_module`)."""
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

    names = [only] if only else sorted(m.name for m in pkgutil.iter_modules(commands.__path__))
    for name in names:
        if name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{name}")
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


def command_module(argv: list[str]) -> str | None:
    """The command module the arguments name (the first word not starting with '-'), if there is one.

    None when an option comes first: it is the root's (`-h search` asks for the overview).
    """
    import importlib.util

    word = next((a for a in argv if not a.startswith("-")), None)
    if not word or argv[0] != word or not word.replace("-", "").isalnum():
        return None
    name = word.replace("-", "_")
    if name.startswith("_") or importlib.util.find_spec(f"hailo_immich_cli.commands.{name}") is None:
        return None
    return name


def main() -> None:
    import sys

    _signals.install()
    try:
        only = command_module(sys.argv[1:])
        (build_app(only) if only else __getattr__("app"))()
    except KeyboardInterrupt as exc:  # during start-up: commands handle their own
        _signals.exit_now(exc)
    except SystemExit:
        signum = _signals.received()
        if signum is not None:  # Typer turns an interrupt during argument parsing into exit 130, even for SIGTERM
            _signals.exit_now(_signals.Interrupted(signum))
        raise
    finally:
        _signals.finishing()
