"""`hailo-immich serve`: Immich's machine-learning service on the NPU (or CPU), same port, same API."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from hailo_immich_cli.commands._common import BackendOption, ModelsDirOption, fail, handle_errors, load_settings

log = logging.getLogger("hailo_immich.server")


def _plain_log_lines(level: str) -> None:
    """One physical line per event, timestamped: server logs are grepped and parsed, never wrapped."""
    root = logging.getLogger("hailo_immich")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    from hailo_immich_cli.server.logs import BatchingStreamHandler

    handler = BatchingStreamHandler(sys.stderr)  # writes at once until the worker's loop batches it
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


def register(app: typer.Typer) -> None:
    @app.command()
    @handle_errors
    def serve(
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
        host: Optional[str] = typer.Option(None, "--host", help="Bind address (env IMMICH_HOST, default [::])"),
        port: Optional[int] = typer.Option(None, "--port", "-p", help="Port (env IMMICH_PORT, default 3003)"),
        threads: Optional[int] = typer.Option(
            None, "--threads", help="Predicts run at once (env MACHINE_LEARNING_REQUEST_THREADS, default CPU count)"
        ),
        model_names: Optional[str] = typer.Option(
            None,
            "--model-names",
            help="strict: refuse Immich model names no recipe reproduces (Immich then tries its next ML URL); "
            "ignore: answer every name with the configured model (env HAILO_IMMICH_MODEL_NAMES, default strict)",
        ),
        recipes_dir: Optional[Path] = typer.Option(None, "--recipes-dir", help="Extra recipes (env HAILO_IMMICH_RECIPES_DIR)"),
        reload: bool = typer.Option(False, "--reload", help="Development: restart the worker when code changes."),
    ) -> None:
        """Serve Immich's /predict API (plus /health and /metrics) with gunicorn."""
        from hailo_immich_cli.server.gunicorn_app import ServeApplication, bind_address, gunicorn_log_level, gunicorn_options, port_in_use

        settings = load_settings(
            backend,
            models_dir,
            host=host,
            port=port,
            request_threads=threads,
            model_names_policy=model_names,
            recipes_dir=recipes_dir,
        )
        if port_in_use(settings.host, settings.port):
            raise fail(f"port {settings.port} is in use on {settings.host} (choose another with --port or IMMICH_PORT)")
        _plain_log_lines(gunicorn_log_level(settings.log_level).upper())
        if settings.model_names_policy == "ignore":
            log.warning(
                "MODEL NAMES IGNORED (--model-names ignore): every request is answered with the configured model, "
                "whatever model Immich asks for. Vectors from a different model than the rest of the library "
                "make search and face clustering wrong."
            )
        log.info(
            "hailo-immich serve on %s (backend %s, %d request thread(s), queue %d)",
            bind_address(settings.host, settings.port),
            settings.backend,
            settings.request_threads,
            settings.max_queue,
        )
        ServeApplication(settings, gunicorn_options(settings, reload=reload)).run()
