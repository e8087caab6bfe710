"""Where a recipe's files live on disk, and whether they are usable.

Lookup order per file: the models dir (`<models_dir>/<recipe id>/<file name>`), then an Immich ML
cache folder if one is configured and the recipe names the file's place in it. Nothing is copied.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from hailo_immich_cli.errors import ModelCorruptError, ModelMissingError
from hailo_immich_cli.models.recipes import FileSpec, Recipe
from hailo_immich_cli.settings import Settings

IMPORTED_CACHE_DIR = "immich-cache"
# Hashes of model files by (path, inode, size, mtime, ctime), kept in the models dir across processes:
# a CLIP visual model is ~350 MB, and every `search` named its model by hashing it again (~0.45 s).
HASH_CACHE_NAME = ".sha256-cache.json"
HASH_CACHE_MAX_ENTRIES = 512


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file (read in full; `ModelFiles.sha256` remembers it for the session)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileState:
    spec: FileSpec
    path: Path | None
    state: str  # present | missing | corrupt
    reason: str = ""


class ModelFiles:
    def __init__(self, settings: Settings):
        self.models_dir = Path(settings.models_dir)
        self.immich_cache = Path(settings.immich_cache_folder) if settings.immich_cache_folder else None
        # `fetch-models --from <Immich cache>` copies models no shipped recipe covers here, in Immich's layout.
        self.imported_cache = self.models_dir / IMPORTED_CACHE_DIR
        self._hashes: dict[str, str] = {}
        self._hash_lock = threading.Lock()
        self._disk_hashes_loaded = False

    def sha256(self, path: Path, reuse: bool = True) -> str:
        """sha256 of a file, remembered by (path, inode, size, mtime, ctime): in this process and in
        the models dir (HASH_CACHE_NAME), so naming a model costs one read per file version, not
        one per command. Any write, copy or replacement changes the key. reuse=False (verifying
        a file) reads it again."""
        st = path.stat()
        key = f"{path.resolve()}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
        if reuse:
            with self._hash_lock:
                if not self._disk_hashes_loaded:
                    self._hashes = {**self._read_disk_hashes(), **self._hashes}
                    self._disk_hashes_loaded = True
                if key in self._hashes:
                    return self._hashes[key]
        value = sha256_of(path)
        with self._hash_lock:
            known = self._hashes.get(key) == value
            self._hashes[key] = value
        if not known:
            self._write_disk_hash(key, value)
        return value

    def _read_disk_hashes(self) -> dict[str, str]:
        try:
            data = json.loads((self.models_dir / HASH_CACHE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet, unreadable or damaged: hashes are computed again
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str) and len(v) == 64}

    def _write_disk_hash(self, key: str, value: str) -> None:
        """Best effort (a read-only models dir keeps hashes for this process only); replaced
        atomically, merged with what other processes wrote, newest entries kept."""
        target = self.models_dir / HASH_CACHE_NAME
        try:
            entries = self._read_disk_hashes()
            entries.pop(key, None)
            entries[key] = value
            entries = dict(list(entries.items())[-HASH_CACHE_MAX_ENTRIES:])
            fd, tmp = tempfile.mkstemp(prefix=HASH_CACHE_NAME, dir=self.models_dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(entries, fh, indent=0)
                os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from other users of the models dir
                os.replace(tmp, target)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass

    def target(self, recipe: Recipe, spec: FileSpec) -> Path:
        """Where fetch-models puts this file."""
        return self.models_dir / recipe.id / spec.name

    def candidates(self, recipe: Recipe, spec: FileSpec) -> list[Path]:
        paths = [self.target(recipe, spec)]
        if self.immich_cache is not None and spec.immich_path:
            paths.append(self.immich_cache / spec.immich_path)
        if spec.immich_path and "immich_cache" in recipe.raw:
            paths.append(self.imported_cache / spec.immich_path)
        return paths

    def find(self, recipe: Recipe, spec: FileSpec) -> Path | None:
        for path in self.candidates(recipe, spec):
            if path.is_file():
                return path
        return None

    def path(self, recipe: Recipe, role: str = "model") -> Path:
        """The file to load, or a ModelMissingError naming the command that fetches it."""
        spec = recipe.file(role)
        found = self.find(recipe, spec)
        if found is None:
            raise ModelMissingError(recipe.id, str(self.target(recipe, spec)))
        return found

    def check(self, recipe: Recipe, spec: FileSpec, verify_hash: bool = True) -> FileState:
        found = self.find(recipe, spec)
        if found is None:
            return FileState(spec, None, "missing")
        if spec.size is not None and found.stat().st_size != spec.size and found == self.target(recipe, spec):
            return FileState(spec, found, "corrupt", f"size {found.stat().st_size} != {spec.size}")
        if verify_hash and spec.sha256 and found == self.target(recipe, spec):
            actual = self.sha256(found, reuse=False)
            if actual != spec.sha256:
                return FileState(spec, found, "corrupt", f"sha256 {actual[:12]}... != {spec.sha256[:12]}...")
        if found.suffix == ".hef":
            from hailo_immich_cli.models.hef import HefFormatError, read_header

            try:
                read_header(found, verify=verify_hash)
            except HefFormatError as exc:
                return FileState(spec, found, "corrupt", str(exc))
        return FileState(spec, found, "present")

    def states(self, recipe: Recipe, verify_hash: bool = True) -> list[FileState]:
        return [self.check(recipe, spec, verify_hash) for spec in recipe.files]

    def require(self, recipe: Recipe, role: str = "model") -> Path:
        """Like path(), but a corrupt file is a typed error too (used right before loading)."""
        spec = recipe.file(role)
        state = self.check(recipe, spec, verify_hash=False)
        if state.state == "missing":
            raise ModelMissingError(recipe.id, str(self.target(recipe, spec)))
        if state.state == "corrupt":
            raise ModelCorruptError(recipe.id, str(state.path), state.reason)
        assert state.path is not None
        return state.path
