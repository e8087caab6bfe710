"""What every command shares: settings from flags + env, the session, logging, error exits."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hailo_immich_cli.commands import _signals
from hailo_immich_cli.errors import BadInputError, HailoImmichError
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

BackendOption = typer.Option(None, "--backend", "-b", help="auto | hailo | cpu (env: HAILO_IMMICH_BACKEND)")
ModelsDirOption = typer.Option(None, "--models-dir", help="Model files folder (env: HAILO_IMMICH_MODELS_DIR, MODELS_DIR)")
# The two-model tasks' per-file commands (detect, ocr) share these.
DetectorOption = typer.Option(None, "--detector", help="Detection recipe id or Immich model name.")
RecognizerOption = typer.Option(None, "--recognizer", help="Recognition recipe id or Immich model name.")
JsonOption = typer.Option(False, "--json", help="One JSON array of records on stdout.")
JsonlOption = typer.Option(False, "--jsonl", help="One JSON record per file per line on stdout, as they finish.")


def db_option(what: str) -> Any:
    """`--db` of a per-file command: its results also go into an index database."""
    return typer.Option(None, "--db", help=f"Also store the {what} in this index database (as `index` does).")


def stderr_console(settings: Settings | None = None) -> Console:
    no_color = bool(settings and settings.no_color)
    return Console(stderr=True, no_color=no_color, highlight=False)


class OneLineHandler(logging.Handler):
    """One physical line per log record on stderr (a one-off command's output is read, not scrolled)."""

    STYLES = {logging.WARNING: "yellow", logging.ERROR: "bold red", logging.CRITICAL: "bold red"}

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = cli_message(record)
            style = self.STYLES.get(record.levelno)
            prefix = f"[{style}]{record.levelname.lower()}:[/] " if style else ""
            self.console.print(prefix + escape(message), soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)


def cli_message(record: logging.LogRecord) -> str:
    """The record's text; the CPU-fallback notice in its short form (serve, /health and reports keep the full one)."""
    detail = getattr(record, "cpu_fallback", None)
    if detail:
        reason = str(detail).split(";")[0].strip()
        return f"no Hailo device ({reason}): running on the CPU; HAILO_IMMICH_BACKEND=hailo makes this an error"
    return record.getMessage()


def setup_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    root = logging.getLogger("hailo_immich")
    root.setLevel(level)
    if not any(isinstance(h, OneLineHandler) for h in root.handlers):
        root.addHandler(OneLineHandler(stderr_console(settings)))
        root.propagate = False


def load_settings(backend: Optional[str] = None, models_dir: Optional[Path] = None, **overrides: Any) -> Settings:
    settings = Settings.load(backend=backend, models_dir=models_dir, **overrides)
    setup_logging(settings)
    return settings


def open_session(settings: Settings) -> SessionManager:
    return SessionManager(settings)


def check_paths_exist(paths: Iterable[Path]) -> None:
    """Every path named on the command line exists: said before anything is loaded or created."""
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise BadInputError(f"{', '.join(missing)}: no such file or folder")


def check_arguments(paths: Iterable[Path] | None, db: Path | None = None) -> None:
    """Input paths exist and a --db can be created: checked before any model loads or file is written."""
    check_paths_exist(paths or ())
    if db is not None:
        from hailo_immich_cli.batch.store import check_db_path

        check_db_path(db)


def open_sink(db: Path | None, command: str, paths: Iterable[Path], task: Any, session=None, recipes: Iterable[Any] = ()):
    """The index database a per-file command also stores its results in (None without --db); the
    `recipes` it has loaded get their model rows now."""
    if db is None:
        return None
    from hailo_immich_cli.batch.sink import DbSink

    sink = DbSink(db, command, list(paths), task.name)
    for recipe in recipes:
        sink.record_recipe(session, recipe.id)
    return sink


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
            signum = _signals.received()
            if signum is not None:  # the error is a consequence of the interrupt (e.g. an import cut short)
                _signals.exit_now(_signals.Interrupted(signum))
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt as exc:  # SIGINT or SIGTERM: `finally` blocks have stopped the work
            if not _signals.installed():  # inside another program (a test runner): let it decide
                raise
            _signals.exit_now(exc)

    return wrapper  # type: ignore[return-value]
