"""The command itself: version, help, and a typed error instead of a traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from hailo_immich_cli import __version__
from hailo_immich_cli.cli import app

runner = CliRunner()


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"hailo-immich {__version__}"
    result = runner.invoke(app, ["-h"])
    assert result.exit_code == 0 and "fetch-models" in result.output


def test_unknown_recipe_is_one_clear_line_not_a_traceback():
    result = runner.invoke(app, ["fetch-models", "--recipe", "does-not-exist"])
    assert result.exit_code == 3
    assert "no recipe 'does-not-exist'" in result.output and "Traceback" not in result.output
