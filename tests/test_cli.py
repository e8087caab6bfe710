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


_PROGRAM = """
import sys
from hailo_immich_cli import cli
sys.argv = ["hailo-immich", *sys.argv[1:]]
try:
    cli.main()
except SystemExit:
    pass
print("MODULES", " ".join(sorted(sys.modules)))
"""


def _run_imports(*args: str) -> tuple[str, set[str]]:
    """Run the real entry point in a fresh process; (what it printed, every module it imported)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _PROGRAM, *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "120"}, timeout=120)
    listed = next(line for line in proc.stdout.splitlines() if line.startswith("MODULES "))
    return proc.stdout + proc.stderr, set(listed.split()[1:])


def test_a_command_imports_only_its_own_module():
    out, modules = _run_imports("search", "--help")
    assert "search [OPTIONS] DB" in out
    assert "hailo_immich_cli.commands.search" in modules
    for heavy in ("onnxruntime", "cv2", "hailo_immich_cli.commands.serve", "hailo_immich_cli.server.app",
                  "hailo_immich_cli.bench.local", "hailo_immich_cli.commands.index", "sqlite_utils"):
        assert heavy not in modules, heavy
    out, modules = _run_imports("--help")  # the overview still lists every command
    assert "fetch-models" in out and "duplicates" in out and "hailo_immich_cli.commands.serve" in modules
    out, _ = _run_imports("-h", "search")  # an option before the command is the root's: the overview
    assert "fetch-models" in out and "duplicates" in out
    out, _ = _run_imports("serach")
    assert "No such command 'serach'" in out and "search" in out
