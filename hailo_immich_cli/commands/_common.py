"""What every command shares: settings from flags + env, the session, logging, error exits."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from hailo_immich_cli.errors import HailoImmichError
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

BackendOption = typer.Option(None, "--backend", "-b", help="auto | hailo | cpu (env: HAILO_IMMICH_BACKEND)")
ModelsDirOption = typer.Option(None, "--models-dir", help="Model files folder (env: HAILO_IMMICH_MODELS_DIR, MODELS_DIR)")


def stderr_console(settings: Settings | None = None) -> Console:
    no_color = bool(settings and settings.no_color)
    return Console(stderr=True, no_color=no_color, highlight=False)


def setup_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    root = logging.getLogger("hailo_immich")
    root.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=stderr_console(settings), show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.propagate = False


def load_settings(backend: Optional[str] = None, models_dir: Optional[Path] = None, **overrides: Any) -> Settings:
    settings = Settings.load(backend=backend, models_dir=models_dir, **overrides)
    setup_logging(settings)
    return settings


def open_session(settings: Settings) -> SessionManager:
    return SessionManager(settings)


def fail(message: str, code: int = 1) -> "typer.Exit":
    stderr_console().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(code)


def handle_errors(func: F) -> F:
    """Typed errors become one clear line and their exit code; never a traceback for bad input."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HailoImmichError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            stderr_console().print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
