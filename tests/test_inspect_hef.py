"""`hailo-immich inspect-hef` through the CLI: tables, JSON, bad files, the --hailort cross-check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from hailo_immich_cli.cli import app
from tests.helpers.hailo import FAKES
from tests.helpers.hef_builder import Layer, build_hef

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", "inspect-hef", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_json_for_every_fixture_matches_the_manifest(hef_fixtures: Path) -> None:
    entries = json.loads((hef_fixtures / "MANIFEST.json").read_text())["files"]
    proc = _cli("--json", *[str(hef_fixtures / e["file"]) for e in entries])
    assert proc.returncode == 0, proc.stderr
    documents = json.loads(proc.stdout)
    for doc, entry in zip(documents, entries):
        summary = entry["summary"]
        assert (doc["hw_arch"], doc["sdk_version"], doc["header_version"]) == (summary["hw_arch"], summary["sdk_version"], summary["header_version"])
        assert doc["hailort_4_23_loadable"] == summary["hailort_4_23_loadable"]
        for ng, exp in zip(doc["network_groups"], summary["network_groups"]):
            assert [(l["name"], l["shape"], l["dtype"]) for l in ng["outputs"]] == [(l["name"], l["shape"], l["dtype"]) for l in exp["outputs"]]
        assert doc["header"]["hash_ok"] is True


def test_table_names_arch_layers_and_quantisation(hef_fixtures: Path) -> None:
    proc = _cli(str(hef_fixtures / "arcface_mobilefacenet.hef"), str(hef_fixtures / "scrfd_2.5g_h15.hef"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "HAILO8P (Hailo-8)" in out and "runs on: Hailo-8" in out
    assert "arcface_mobilefacenet/fc1" in out and "0.0167389 / 144" in out and "MatMul_95" in out
    assert "HAILO15H" in out and "neither Hailo-8 nor Hailo-8L" in out and "scrfd_2_5g/conv42" in out


def test_bad_files_exit_non_zero_without_traceback(tmp_path: Path, hef_fixtures: Path) -> None:
    junk = tmp_path / "junk.hef"
    junk.write_bytes(b"not a hef at all")
    good = hef_fixtures / "arcface_mobilefacenet.hef"
    cut = tmp_path / "cut.hef"
    cut.write_bytes(good.read_bytes()[:100_000])
    proc = _cli(str(good), str(junk), str(cut), str(tmp_path / "missing.hef"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{junk}: not a HEF file" in proc.stderr and f"{cut}: truncated" in proc.stderr and "cannot read" in proc.stderr
    assert "arcface_mobilefacenet/fc1" in proc.stdout  # the good file is still described
    proc = _cli("--json", str(junk))
    assert proc.returncode == 2 and json.loads(proc.stdout) == [{"file": str(junk), "valid": False, "error": f"{junk}: not a HEF file (magic bytes are 6e6f7420, expected 01484546)"}]


def test_hailort_missing_is_said_clearly(hef_fixtures: Path) -> None:
    proc = _cli("--hailort", str(hef_fixtures / "arcface_mobilefacenet.hef"))
    assert proc.returncode == 0
    assert "HailoRT (hailo_platform) is not installed" in " ".join(proc.stderr.split())
    doc = json.loads(_cli("--hailort", "--json", str(hef_fixtures / "arcface_mobilefacenet.hef")).stdout)[0]
    assert "not installed" in doc["hailort_cross_check"]["skipped"]


def test_hailort_cross_check_agrees_on_real_and_built_hefs(hailo_double, tmp_path: Path, hef_fixtures: Path) -> None:
    built = build_hef(tmp_path / "b.hef", "b", [Layer("b/in", (8, 8, 3))], [Layer("b/out", (10,), qp_scale=0.1, qp_zp=7)])
    result = CliRunner().invoke(app, ["inspect-hef", "--hailort", str(hef_fixtures / "arcface_mobilefacenet.hef"), str(built)])
    assert result.exit_code == 0, result.output
    assert result.output.count("HailoRT 4.23.0 agrees") == 2
    result = CliRunner().invoke(app, ["inspect-hef", "--hailort", "--json", str(hef_fixtures / "mnist.hef")])
    assert result.exit_code == 3  # HailoRT 4.23 refuses this outdated HEF: reported as a disagreement
    doc = json.loads(result.stdout)[0]
    assert "HailoRTInvalidHEFException" in doc["hailort_cross_check"]["differences"][0]


def test_subprocess_with_the_double_on_pythonpath(hef_fixtures: Path) -> None:
    proc = _cli("--hailort", str(hef_fixtures / "fast_depth.hef"), env={"PYTHONPATH": f"{REPO}{os.pathsep}{FAKES}"})
    assert proc.returncode == 0, proc.stderr
    assert "HailoRT 4.23.0 agrees" in proc.stdout
