"""`hailo-immich serve` options and the gunicorn configuration it builds (no server started here)."""

from __future__ import annotations

from typer.testing import CliRunner

from hailo_immich_cli.cli import app
from hailo_immich_cli.server.gunicorn_app import ServeApplication, bind_address, gunicorn_log_level, gunicorn_options
from hailo_immich_cli.settings import Settings


def test_serve_help_lists_the_immich_knobs():
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for word in ("--host", "--port", "--threads", "--model-names", "IMMICH_HOST", "MACHINE_LEARNING_REQUEST_THREADS", "HAILO_IMMICH_MODEL_NAMES"):
        assert word in result.output


def test_bind_addresses_like_immich():
    assert bind_address("[::]", 3003) == "[::]:3003"
    assert bind_address("::", 3003) == "[::]:3003"
    assert bind_address("0.0.0.0", 3003) == "0.0.0.0:3003"


def test_gunicorn_options_follow_immich_settings():
    env = {
        "IMMICH_HOST": "127.0.0.1",
        "IMMICH_PORT": "3010",
        "MACHINE_LEARNING_REQUEST_THREADS": "3",
        "MACHINE_LEARNING_WORKER_TIMEOUT": "120",
        "MACHINE_LEARNING_HTTP_KEEPALIVE_TIMEOUT_S": "5",
        "IMMICH_LOG_LEVEL": "verbose",
        "HAILO_IMMICH_MAX_QUEUE": "7",
    }
    settings = Settings.load(env=env)
    opts = gunicorn_options(settings)
    assert opts["bind"] == ["127.0.0.1:3010"]
    assert (opts["workers"], opts["threads"], opts["timeout"], opts["keepalive"]) == (1, 3, 120, 5)
    assert opts["loglevel"] == "debug" and gunicorn_log_level("warn") == "warning"
    assert opts["worker_class"].endswith("ServeWorker") and opts["preload_app"] is False
    application = ServeApplication(settings, opts)
    assert application.cfg.threads == 3 and application.cfg.workers == 1
    assert application.spare_threads == 7 + 4


def test_invalid_model_names_policy_is_a_usage_error():
    result = CliRunner().invoke(app, ["serve", "--model-names", "sometimes"])
    assert result.exit_code == 2
    assert "strict" in result.output
