"""`hailo-immich doctor`: every link of the Hailo chain checked in order, each with a one-line fix.

Checks that need an earlier link (a device, the library) are skipped with a line saying which one,
so the report on a machine without a Hailo still says exactly what is missing.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hailo_immich_cli.backends.base import Backend
from hailo_immich_cli.backends.hailo import BUSY_HINT, DRIVER_HINT, INSTALL_HINT, SERVICE_HINT, SUPPORTED_HAILORT, _normalise_arch, _open_vdevice
from hailo_immich_cli.doctor.probes import SERVICE_NAME, Probes
from hailo_immich_cli.errors import BackendUnavailableError, HailoImmichError
from hailo_immich_cli.models.hef import ARCH_LABELS, HefFormatError, read_hef
from hailo_immich_cli.models.files import ModelFiles, sha256_of
from hailo_immich_cli.models.resolve import default_models
from hailo_immich_cli.models.recipes import Recipe, RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.tasks import recipe_tasks

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass
class Check:
    id: str
    status: str
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Facts:
    """What a bug report needs, filled in as the checks learn it."""

    hailort: str | None = None
    emulated: bool = False
    driver: str | None = None
    firmware: str | None = None
    device_arch: str | None = None
    device_id: str | None = None
    hefs: dict[str, dict[str, Any]] = field(default_factory=dict)  # recipe id -> file, sha256, arch


class _PlannedHailo(Backend):
    """Stands for the Hailo backend while doctor asks which recipes serve each task; never loads."""

    name = "hailo"

    def load(self, recipe, files):  # pragma: no cover - doctor never loads through it
        raise BackendUnavailableError("doctor plans placement only")

    def info(self) -> dict[str, Any]:
        return {"device": "not opened (placement only)"}


def planning_session(settings: Settings, book: RecipeBook) -> SessionManager:
    """A session that resolves recipes as on a working Hailo host (unless the backend is set to cpu)."""
    return SessionManager(settings, book, backends={"hailo": _PlannedHailo()})


def configured_recipes(settings: Settings, book: RecipeBook) -> list[Recipe]:
    """The recipes this configuration uses: each task's default or configured recipe, and the one
    serving Immich's default model name of the task (buffalo_l, ViT-B-32__openai, PP-OCRv5_mobile);
    refused names are left out (placement says why)."""
    session = planning_session(settings, book)
    chosen: dict[str, Recipe] = {}
    immich_default: dict[str, str] = {}
    for _, task, model in default_models():
        immich_default.setdefault(task, model)  # Immich's default name of the task, not the other packs
    for task in recipe_tasks():
        for name in (None, immich_default.get(task)):
            try:
                recipe = session.resolve(task, name)
            except HailoImmichError:
                continue
            chosen.setdefault(recipe.id, recipe)
    return sorted(chosen.values(), key=lambda r: (recipe_tasks().index(r.task), r.id))


# ---- the checks ---------------------------------------------------------------------------------


def check_hailort(probes: Probes, facts: Facts) -> tuple[Check, Any]:
    try:
        hp = probes.import_hailo()
    except ImportError as exc:
        return Check("hailort", FAIL, f"hailo_platform is not importable ({exc})", INSTALL_HINT), None
    version = str(getattr(hp, "__version__", "unknown"))
    facts.hailort, facts.emulated = version, bool(getattr(hp, "__emulated__", False))
    emulated = " [emulated: hailo_platform test double]" if facts.emulated else ""
    if not version.startswith(SUPPORTED_HAILORT):
        return Check("hailort", WARN, f"HailoRT {version}{emulated}; hailo-immich is built for {SUPPORTED_HAILORT}.x",
                     f"install HailoRT {SUPPORTED_HAILORT}.0 (wheel, .deb and hailo_pci driver)", {"version": version}), hp
    return Check("hailort", PASS, f"HailoRT {version}{emulated}", data={"version": version}), hp


def check_driver(probes: Probes, facts: Facts) -> Check:
    version, source = probes.driver_version()
    facts.driver = version
    if version is None:
        return Check("driver", FAIL, f"the hailo_pci kernel driver is not loaded (looked at {source})",
                     f"install the hailort-pcie-driver package ({facts.hailort or SUPPORTED_HAILORT + '.0'}) and run `sudo modprobe hailo_pci`")
    if facts.hailort and version != facts.hailort:
        return Check("driver", FAIL, f"hailo_pci driver {version} but HailoRT library {facts.hailort} (HAILO_INVALID_DRIVER_VERSION)",
                     DRIVER_HINT.format(version=facts.hailort).split(". ", 1)[1], {"driver": version, "library": facts.hailort})
    return Check("driver", PASS, f"hailo_pci {version} ({source})" + (" = library" if facts.hailort else ""), data={"driver": version})


def check_nodes(probes: Probes) -> tuple[Check, list[Path]]:
    nodes = probes.device_nodes()
    if not nodes:
        return Check("device-node", FAIL, f"no {probes.dev_dir}/hailo* device node",
                     "load the driver (`sudo modprobe hailo_pci`, see `dmesg | grep -i hailo`); in a container pass "
                     "`--device /dev/hailo0`"), nodes
    denied = [str(n) for n in nodes if not os.access(n, os.R_OK | os.W_OK)]
    if denied:
        return Check("device-node", FAIL, f"{', '.join(denied)}: no read/write permission for this user",
                     "add the user to the device's group (`ls -l /dev/hailo0`; `sudo usermod -aG <group> $USER`) or run "
                     "with access to it (container: `--group-add` that group)"), nodes
    return Check("device-node", PASS, ", ".join(map(str, nodes)) + " (read/write)"), nodes


def check_device(hp, probes: Probes, facts: Facts, nodes: list[Path]) -> Check:
    if hp is None or not nodes:
        return Check("device", SKIP, "needs hailo_platform and a device node (see above)")
    try:
        ids = list(hp.Device.scan())
    except Exception as exc:  # HailoRT's own exception types
        return Check("device", FAIL, f"HailoRT could not scan for devices: {exc}", "check `dmesg | grep -i hailo` and the driver version")
    if not ids:
        return Check("device", FAIL, "HailoRT sees no device although a node exists", "reload the driver: `sudo modprobe -r hailo_pci && sudo modprobe hailo_pci`")
    device = None
    try:
        device = hp.Device(ids[0])
        board = device.control.identify()
    except Exception as exc:
        return Check("device", FAIL, f"HailoRT could not identify device {ids[0]}: {exc}", "check `hailortcli fw-control identify` and `dmesg | grep -i hailo`")
    finally:
        if device is not None:
            try:
                device.release()
            except Exception:
                pass
    facts.device_id = str(ids[0])
    facts.device_arch = _normalise_arch(getattr(board, "device_architecture", ""))
    facts.firmware = str(getattr(board, "firmware_version", "") or "") or None
    label = ARCH_LABELS.get(facts.device_arch or "", str(getattr(board, "device_architecture", "?")))
    detail = f"{label} {facts.device_id}, firmware {facts.firmware or 'unknown'}"
    if facts.firmware and facts.hailort and facts.firmware.split(" ")[0] != facts.hailort:
        return Check("device", WARN, f"{detail}; firmware differs from HailoRT {facts.hailort}",
                     f"update the firmware to {facts.hailort} (it ships with the hailort-pcie-driver package; reboot after installing)")
    return Check("device", PASS, detail, data={"arch": facts.device_arch, "firmware": facts.firmware})


def check_users(probes: Probes, settings: Settings, nodes: list[Path]) -> Check:
    holders = probes.holders(nodes) if nodes else []
    others = [h for h in holders if h.name != SERVICE_NAME]
    service = probes.service_pid()
    data = {"holders": [asdict(h) for h in holders], "service_pid": service}
    if settings.hailo_multi_process_service:
        if service is None:
            return Check("device-users", FAIL, f"HAILO_IMMICH_MULTI_PROCESS_SERVICE is set but {SERVICE_NAME} is not running", SERVICE_HINT, data)
        return Check("device-users", PASS, f"shared through {SERVICE_NAME} (pid {service})", data=data)
    if others:
        who = ", ".join(f"{h.name} (pid {h.pid})" for h in others)
        return Check("device-users", FAIL, f"{who} holds {others[0].node}", BUSY_HINT.split(". ", 1)[1], data)
    if service is not None and holders:
        return Check("device-users", FAIL, f"{SERVICE_NAME} (pid {service}) holds the device but HAILO_IMMICH_MULTI_PROCESS_SERVICE is off",
                     "set HAILO_IMMICH_MULTI_PROCESS_SERVICE=1", data)
    return Check("device-users", PASS, "no other process holds the device" if nodes else "no device node to hold", data=data)


def check_open(hp, settings: Settings, facts: Facts) -> Check:
    if hp is None or facts.device_id is None:
        return Check("device-open", SKIP, "needs an identified device (see above)")
    try:
        vdevice = _open_vdevice(hp, settings.hailo_multi_process_service)
    except BackendUnavailableError as exc:
        text = str(exc)
        fix = text.split(". ", 1)[1] if ". " in text else "see the checks above"
        return Check("device-open", FAIL, text.split(". ", 1)[0], fix)
    try:
        vdevice.release()
    except Exception:
        pass
    return Check("device-open", PASS, "VDevice opens with the ROUND_ROBIN scheduler" +
                 (" through hailort_service" if settings.hailo_multi_process_service else ""))


def _other_arch_url(recipe: Recipe, device_arch: str) -> str:
    folder = "hailo8l" if device_arch == "HAILO8L" else "hailo8"
    for spec in recipe.files:
        for source in spec.sources:
            if spec.role == "model" and source.url:
                return source.url.replace("/hailo8/", f"/{folder}/").replace("/hailo8l/", f"/{folder}/")
    return f"the Model Zoo's {folder} folder"


def check_model_files(recipes: list[Recipe], files: ModelFiles, facts: Facts) -> list[Check]:
    """Every file of every configured recipe: present, and size/sha256 as the recipe pins them."""
    checks = []
    for recipe in recipes:
        problems, notes = [], []
        for spec in recipe.files:
            state = files.check(recipe, spec)
            if state.state == "missing":
                problems.append(f"{spec.name} missing")
            elif state.state == "corrupt":
                problems.append(f"{spec.name}: {state.reason}")
            elif spec.role == "model" and state.path is not None and (spec.sha256 is None or recipe.backend == "hailo"):
                digest = sha256_of(state.path)
                if recipe.backend == "hailo":
                    facts.hefs.setdefault(recipe.id, {}).update({"file": str(state.path), "sha256": digest, "size": state.path.stat().st_size})
                if spec.sha256 is None:
                    notes.append(f"{spec.name} sha256 not pinned in the recipe ({digest})")
        if problems:
            checks.append(Check(f"files:{recipe.id}", FAIL, "; ".join(problems),
                                f"hailo-immich fetch-models --recipe {recipe.id} (a damaged file is replaced)"))
        else:
            detail = f"{recipe.id} ({recipe.backend}): {len(recipe.files)} file(s) present" + ("; " + "; ".join(notes) if notes else "")
            checks.append(Check(f"files:{recipe.id}", PASS, detail))
    return checks


def check_hef_arch(recipes: list[Recipe], files: ModelFiles, facts: Facts) -> list[Check]:
    checks = []
    for recipe in recipes:
        if recipe.backend != "hailo":
            continue
        path = files.find(recipe, recipe.file("model"))
        if path is None:
            continue  # reported by the files check
        try:
            info = read_hef(path, verify=False)
        except HefFormatError as exc:
            checks.append(Check(f"hef:{recipe.id}", FAIL, f"{path.name}: not a readable HEF ({exc})", f"hailo-immich fetch-models --recipe {recipe.id}"))
            continue
        facts.hefs.setdefault(recipe.id, {}).update({"file": str(path), "hw_arch": info.hw_arch, "sdk": info.sdk_version})
        if facts.device_arch is None:
            checks.append(Check(f"hef:{recipe.id}", SKIP, f"{path.name} is for {info.arch_label} ({info.hw_arch}); no device to compare with"))
        elif not info.runs_on(facts.device_arch):
            device = ARCH_LABELS.get(facts.device_arch, facts.device_arch)
            checks.append(Check(f"hef:{recipe.id}", FAIL, f"{path.name} was compiled for {info.arch_label} ({info.hw_arch}); this device is a {device}",
                                f"use the HEF built for this chip: {_other_arch_url(recipe, facts.device_arch)} (a recipe copy in HAILO_IMMICH_RECIPES_DIR)"))
        elif not info.hailort_4_23_loadable:
            checks.append(Check(f"hef:{recipe.id}", FAIL, f"{path.name}: HailoRT 4.23 refuses it: {'; '.join(info.hailort_4_23_reasons)}",
                                "use a HEF compiled with a Dataflow Compiler of the HailoRT 4.23 line (Model Zoo v2.17-v2.19)"))
        else:
            slower = " (runs, slower: compiled for Hailo-8L)" if info.hw_arch == "HAILO8L" and facts.device_arch == "HAILO8" else ""
            checks.append(Check(f"hef:{recipe.id}", PASS, f"{path.name}: {info.arch_label} HEF on a {ARCH_LABELS.get(facts.device_arch)}{slower}"))
    return checks


def check_immich_cache(settings: Settings) -> Check | None:
    folder = settings.immich_cache_folder
    if folder is None:
        return None
    from hailo_immich_cli.models.immich_cache import scan_folder

    folder = Path(folder)
    if not folder.is_dir():
        return Check("immich-cache", FAIL, f"MACHINE_LEARNING_CACHE_FOLDER={folder} is not a folder",
                     "mount Immich's model-cache volume there (read-only is enough) or unset the variable")
    if not os.access(folder, os.R_OK | os.X_OK):
        return Check("immich-cache", FAIL, f"{folder} is not readable by this user", "make it readable (`chmod -R a+rX` or mount it with this user's uid)")
    try:
        models = scan_folder(folder)
    except OSError as exc:
        return Check("immich-cache", FAIL, f"{folder} cannot be read: {exc}", "check the mount and its permissions")
    unreadable = [m.name for m in models if not os.access(m.model_dir, os.R_OK | os.X_OK)]
    if unreadable:
        return Check("immich-cache", FAIL, f"{folder}: model folders not readable: {', '.join(unreadable)}", "make them readable (`chmod -R a+rX`)")
    names = sorted({m.name for m in models})
    return Check("immich-cache", PASS if models else WARN, f"{folder}: {len(names)} model(s): {', '.join(names) or 'none found'}",
                 "" if models else "point MACHINE_LEARNING_CACHE_FOLDER at the folder Immich mounts as /cache", {"models": names})


def run_checks(settings: Settings, book: RecipeBook, probes: Probes | None = None) -> tuple[list[Check], Facts, list[Recipe]]:
    """All checks in chain order; returns them, the facts learnt, and the configured recipes."""
    probes = probes or Probes()
    facts = Facts()
    checks: list[Check] = []
    library, hp = check_hailort(probes, facts)
    checks.append(library)
    checks.append(check_driver(probes, facts))
    nodes_check, nodes = check_nodes(probes)
    checks.append(nodes_check)
    checks.append(check_device(hp, probes, facts, nodes))
    checks.append(check_users(probes, settings, nodes))
    checks.append(check_open(hp, settings, facts))
    recipes = configured_recipes(settings, book)
    files = ModelFiles(settings)
    checks += check_model_files(recipes, files, facts)
    checks += check_hef_arch(recipes, files, facts)
    cache = check_immich_cache(settings)
    if cache is not None:
        checks.append(cache)
    return checks, facts, recipes


DEVICE_CHECKS = ("hailort", "driver", "device-node", "device", "device-users", "device-open")


def device_ready(checks: list[Check]) -> bool:
    """The library, driver and device links hold, whatever the model files say (for --compare)."""
    return all(c.status in (PASS, WARN) for c in checks if c.id in DEVICE_CHECKS)


def all_passed(checks: list[Check]) -> bool:
    """Skips only follow a failed link, so no failure means every link holds (warnings allowed)."""
    return not any(c.status == FAIL for c in checks)
