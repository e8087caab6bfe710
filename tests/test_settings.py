"""Settings: flag > env > default, with the names Immich users already know."""

from __future__ import annotations

from pathlib import Path

import pytest

from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.settings import Settings, preload_from_env


def test_defaults_match_immich():
    s = Settings.load(env={})
    assert (s.host, s.port, s.backend, s.max_batch_ocr) == ("[::]", 3003, "auto", 6)
    assert s.ort_intra_op_threads == 2 and s.ort_inter_op_threads == 1


def test_env_then_flag_precedence(tmp_path):
    env = {"IMMICH_PORT": "4000", "HAILO_IMMICH_BACKEND": "cpu", "MODELS_DIR": str(tmp_path), "NO_COLOR": "1",
           "MACHINE_LEARNING_MODEL_INTRA_OP_THREADS": "3", "MACHINE_LEARNING_CACHE_FOLDER": str(tmp_path / "c")}
    s = Settings.load(env=env)
    assert (s.port, s.backend, s.models_dir, s.no_color, s.ort_intra_op_threads) == (4000, "cpu", tmp_path, True, 3)
    assert s.immich_cache_folder == tmp_path / "c"
    s = Settings.load(env=env, port=5000, backend="auto", models_dir=None)
    assert (s.port, s.backend, s.models_dir) == (5000, "auto", tmp_path)


def test_our_name_wins_over_the_generic_alias(tmp_path):
    s = Settings.load(env={"HAILO_IMMICH_MODELS_DIR": str(tmp_path / "a"), "MODELS_DIR": str(tmp_path / "b")})
    assert s.models_dir == Path(tmp_path / "a")


@pytest.mark.parametrize("env, message", [
    ({"IMMICH_PORT": "many"}, "IMMICH_PORT"),
    ({"HAILO_IMMICH_BACKEND": "gpu"}, "backend must be one of"),
    ({"HAILO_IMMICH_MODEL_NAMES": "loose"}, "strict"),
])
def test_bad_values_are_clear_errors(env, message):
    with pytest.raises(BadInputError, match=message):
        Settings.load(env=env)


def test_preload_names_follow_immich():
    env = {"MACHINE_LEARNING_PRELOAD__CLIP__TEXTUAL": "ViT-B-32__openai",
           "MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION__DETECTION": "buffalo_l, buffalo_s",
           "MACHINE_LEARNING_PRELOAD__CLIP": "deprecated-form-ignored"}
    assert preload_from_env(env) == {("clip", "textual"): ["ViT-B-32__openai"],
                                     ("facial-recognition", "detection"): ["buffalo_l", "buffalo_s"]}
