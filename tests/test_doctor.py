"""`hailo-immich doctor` environment checks on a simulated machine: a temporary /sys, /dev and /proc
and the hailo_platform test double (EMULATED device). Each failure users meet on first contact is
simulated and must give one line naming it and a fix."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hailo_immich_cli.doctor.checks import all_passed, run_checks
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.settings import Settings
from tests.helpers.fake_machine import FakeMachine


@pytest.fixture
def machine(hailo_double, tmp_path: Path) -> FakeMachine:
    import hailo_platform

    fake = FakeMachine(tmp_path / "machine", hailo_platform).driver("4.23.0")
    fake.node()
    return fake


def _settings(tmp_path: Path, **kw) -> Settings:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    return Settings.load(env={}, models_dir=models, **kw)


def _by_id(checks) -> dict:
    return {c.id: c for c in checks}


ENVIRONMENT = ("hailort", "driver", "device-node", "device", "device-users", "device-open")


def test_healthy_emulated_host_passes_every_environment_check(machine: FakeMachine, tmp_path: Path) -> None:
    checks, facts, recipes = run_checks(_settings(tmp_path), RecipeBook.load(), machine.probes())
    found = _by_id(checks)
    for check_id in ENVIRONMENT:
        assert found[check_id].status == "pass", found[check_id]
    assert facts.hailort == "4.23.0" and facts.driver == "4.23.0" and facts.device_arch == "HAILO8" and facts.firmware == "4.23.0"
    assert "emulated" in found["hailort"].detail
    # default settings on a Hailo host: Immich's buffalo_l detection is served by the SCRFD-10GF HEF
    assert {"scrfd-10g-hailo8", "buffalo_l-recognition-cpu", "clip-vit-b32-visual-hailo"} <= {r.id for r in recipes}
    # nothing fetched into the empty models dir: every configured recipe says so, with the command that fetches it
    assert found["files:scrfd-10g-hailo8"].status == "fail"
    assert found["files:scrfd-10g-hailo8"].fix == "hailo-immich fetch-models --recipe scrfd-10g-hailo8 (a damaged file is replaced)"
    assert not all_passed(checks)


def test_driver_and_library_versions_differ(machine: FakeMachine, tmp_path: Path) -> None:
    machine.driver("4.22.0")
    machine.hp._emulator.MACHINE.driver_version = "4.22.0"  # what libhailort then refuses
    checks, facts, _ = run_checks(_settings(tmp_path), RecipeBook.load(), machine.probes())
    found = _by_id(checks)
    driver = found["driver"]
    assert driver.status == "fail"
    assert driver.detail == "hailo_pci driver 4.22.0 but HailoRT library 4.23.0 (HAILO_INVALID_DRIVER_VERSION)"
    assert "install hailort 4.23.0 and hailo_pci 4.23.0" in driver.fix and "\n" not in driver.fix
    assert found["device-open"].status == "fail" and "HAILO_INVALID_DRIVER_VERSION" in found["device-open"].detail


def test_driver_version_from_modinfo_when_sysfs_has_none(machine: FakeMachine, tmp_path: Path) -> None:
    machine.driver(None)
    probes = dataclasses.replace(machine.probes(), modinfo=lambda: "filename: /lib/modules/hailo_pci.ko\nversion:        4.23.0\nlicense: GPL\n")
    found = _by_id(run_checks(_settings(tmp_path), RecipeBook.load(), probes)[0])
    assert found["driver"].status == "pass" and "modinfo hailo_pci" in found["driver"].detail


def test_no_driver_and_no_device_node_say_what_is_missing(machine: FakeMachine, tmp_path: Path) -> None:
    machine.driver(None)
    (machine.root / "dev/hailo0").unlink()
    found = _by_id(run_checks(_settings(tmp_path), RecipeBook.load(), machine.probes())[0])
    assert found["driver"].status == "fail" and "not loaded" in found["driver"].detail and "modprobe hailo_pci" in found["driver"].fix
    node = found["device-node"]
    assert node.status == "fail" and node.detail == f"no {machine.root / 'dev'}/hailo* device node"
    assert "--device /dev/hailo0" in node.fix
    assert found["device"].status == "skip" and found["device-open"].status == "skip"


def test_without_hailort_every_hailo_check_says_why(tmp_path: Path) -> None:
    def missing():
        raise ImportError("No module named 'hailo_platform'")

    fake = FakeMachine(tmp_path / "machine", None)
    probes = dataclasses.replace(fake.probes(), import_hailo=missing)
    found = _by_id(run_checks(_settings(tmp_path), RecipeBook.load(), probes)[0])
    assert found["hailort"].status == "fail" and "hailort-4.23.0" in found["hailort"].fix
    assert found["device"].status == "skip" and found["device-open"].status == "skip"


def test_device_held_by_another_process(machine: FakeMachine, tmp_path: Path) -> None:
    machine.process(4242, "frigate", holds=machine.root / "dev/hailo0")
    machine.process(4243, "bash")
    machine.hp._emulator.MACHINE.held_by_other_process = True
    found = _by_id(run_checks(_settings(tmp_path), RecipeBook.load(), machine.probes())[0])
    users = found["device-users"]
    assert users.status == "fail"
    assert users.detail == f"frigate (pid 4242) holds {machine.root / 'dev/hailo0'}"
    assert "hailort_service" in users.fix and "HAILO_IMMICH_MULTI_PROCESS_SERVICE=1" in users.fix
    assert found["device-open"].status == "fail" and "HAILO_OUT_OF_PHYSICAL_DEVICES" in found["device-open"].detail


def test_multi_process_service_setting_needs_the_service(machine: FakeMachine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, hailo_multi_process_service=True)
    found = _by_id(run_checks(settings, RecipeBook.load(), machine.probes())[0])
    assert found["device-users"].status == "fail" and "hailort_service is not running" in found["device-users"].detail
    assert "systemctl enable --now hailort.service" in found["device-users"].fix
    machine.process(77, "hailort_service", holds=machine.root / "dev/hailo0")
    machine.process(4242, "frigate")
    machine.hp._emulator.MACHINE.service_running = True
    found = _by_id(run_checks(settings, RecipeBook.load(), machine.probes())[0])
    assert found["device-users"].status == "pass" and "pid 77" in found["device-users"].detail
    assert found["device-open"].status == "pass"


def _place_hef(settings: Settings, recipe_id: str, name: str, source: Path) -> Path:
    target = Path(settings.models_dir) / recipe_id / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


@pytest.mark.shared
def test_hailo8_hef_on_a_hailo8l(machine: FakeMachine, tmp_path: Path, hef_fixtures: Path) -> None:
    """Real HEFs: a Hailo-8 (HAILO8P) ArcFace HEF on a Hailo-8L device fails with the hailo8l URL as fix;
    a Hailo-8L HEF on a Hailo-8 passes (slower)."""
    settings = _settings(tmp_path)
    _place_hef(settings, "arcface-mobilefacenet-hailo8", "arcface_mobilefacenet.hef", hef_fixtures / "arcface_mobilefacenet.hef")
    _place_hef(settings, "scrfd-2.5g-hailo8", "scrfd_2.5g.hef", hef_fixtures / "model_3x640x640_h8l.hef")
    machine.hp._emulator.MACHINE.devices[0].arch = "HAILO8L"
    checks, facts, _ = run_checks(settings, RecipeBook.load(), machine.probes())
    found = _by_id(checks)
    assert facts.device_arch == "HAILO8L"
    hef = found["hef:arcface-mobilefacenet-hailo8"]
    assert hef.status == "fail"
    assert hef.detail == "arcface_mobilefacenet.hef was compiled for Hailo-8 (HAILO8P); this device is a Hailo-8L"
    assert "/v2.18.0/hailo8l/arcface_mobilefacenet.hef" in hef.fix
    assert found["hef:scrfd-2.5g-hailo8"].status == "pass"
    assert facts.hefs["arcface-mobilefacenet-hailo8"]["sha256"] == "d177f1e5fdceb889a61f980425796398bd847b96ed1580a642989f7867b7209e"

    machine.hp._emulator.MACHINE.devices[0].arch = "HAILO8"
    found = _by_id(run_checks(settings, RecipeBook.load(), machine.probes())[0])
    assert found["hef:arcface-mobilefacenet-hailo8"].status == "pass"
    assert "slower" in found["hef:scrfd-2.5g-hailo8"].detail


@pytest.mark.shared
def test_hash_mismatch_against_the_recipe(machine: FakeMachine, tmp_path: Path, hef_fixtures: Path) -> None:
    settings = _settings(tmp_path)
    book = RecipeBook.load()
    recipe = book.get("arcface-mobilefacenet-hailo8")
    pinned = dataclasses.replace(recipe, files=tuple(
        dataclasses.replace(f, sha256="d177f1e5fdceb889a61f980425796398bd847b96ed1580a642989f7867b7209e", size=3552250) if f.role == "model" else f
        for f in recipe.files))
    book = RecipeBook([*(r for r in book if r.id != recipe.id), pinned])
    path = _place_hef(settings, recipe.id, "arcface_mobilefacenet.hef", hef_fixtures / "arcface_mobilefacenet.hef")
    assert _by_id(run_checks(settings, book, machine.probes())[0])[f"files:{recipe.id}"].status == "pass"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    files = _by_id(run_checks(settings, book, machine.probes())[0])[f"files:{recipe.id}"]
    assert files.status == "fail"
    assert files.detail.startswith("arcface_mobilefacenet.hef: sha256 ") and files.detail.endswith("!= d177f1e5fdce...")
    assert files.fix == f"hailo-immich fetch-models --recipe {recipe.id} (a damaged file is replaced)"


def test_immich_cache_folder_must_be_readable(machine: FakeMachine, tmp_path: Path) -> None:
    settings = _settings(tmp_path, immich_cache_folder=tmp_path / "nowhere")
    found = _by_id(run_checks(settings, RecipeBook.load(), machine.probes())[0])
    assert found["immich-cache"].status == "fail" and "is not a folder" in found["immich-cache"].detail


def test_cli_without_a_device_reports_what_is_missing_as_json(tmp_path: Path, monkeypatch) -> None:
    """The real command, no hailo_platform and an empty machine: exit 1, JSON naming each missing link."""
    from hailo_immich_cli.cli import app
    from hailo_immich_cli.commands import doctor as command

    def missing():
        raise ImportError("No module named 'hailo_platform'")

    fake = FakeMachine(tmp_path / "machine", None)
    monkeypatch.setattr(command, "default_probes", lambda: dataclasses.replace(fake.probes(), import_hailo=missing))
    report_md = tmp_path / "report.md"
    run = CliRunner().invoke(app, ["doctor", "--json", "--models-dir", str(tmp_path / "models"), "--markdown", str(report_md)],
                             env={k: v for k, v in os.environ.items() if not k.startswith(("HAILO_IMMICH", "MACHINE_LEARNING"))})
    assert run.exit_code == 1, run.output
    report = json.loads(run.stdout)
    assert report["ok"] is False
    status = {c["id"]: c["status"] for c in report["checks"]}
    assert status["hailort"] == "fail" and status["driver"] == "fail" and status["device-node"] == "fail"
    assert all(c["fix"] for c in report["checks"] if c["status"] == "fail")
    assert report["environment"]["host"]["python"]
    placement = {(p["immich"], p["model"]): p for p in report["placement"]}
    assert placement[("facial-recognition/detection", "buffalo_l")]["recipe"] == "scrfd-10g-hailo8"
    text = report_md.read_text()
    assert "| hailort | FAIL |" in text and "HailoRT not installed" in text
