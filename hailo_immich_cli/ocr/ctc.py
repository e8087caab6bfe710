"""CTC greedy decoding and the recogniser's character set (file or ONNX metadata).

Class 0 is the CTC blank, class k is dictionary entry k-1, and the last class is the space. The
space is kept: dropping it runs words together, which breaks Immich's text search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hailo_immich_cli.errors import ModelCorruptError, ModelMismatchError
from hailo_immich_cli.models.recipes import Recipe

def charset_from_lines(lines: list[str], post) -> tuple[str, ...]:
    """Class table: blank (index `blank_index`), the dictionary from `dictionary_offset`, then the space."""
    table = list(lines)
    if post.get("append_space", True):
        table.append(" ")
    offset = int(post.get("dictionary_offset", 1))
    return tuple(["<blank>"] * offset + table)


def _read_lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    return [line.rstrip("\r") for line in text.split("\n")][: None if not text.endswith("\n") else -1]


def _read_onnx_metadata(path: Path, key: str) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == key:
            return prop.value.splitlines()
    raise ModelMismatchError(f"{path}: the ONNX file has no metadata key '{key}' holding the character dictionary")


def load_charset(recipe: Recipe, files) -> tuple[str, ...]:
    """The recipe's class table: from its `dictionary` file, else from ONNX metadata (`dictionary_metadata_key`).

    Read on every call: callers keep it on the loaded model (`LoadedModel.host_resource`)."""
    post = recipe.postprocess
    if recipe.has_file("dictionary"):
        path, source = files.require(recipe, "dictionary"), "file"
    else:
        key = post.get("dictionary_metadata_key")
        if not key:
            raise ModelMismatchError(f"recipe {recipe.id}: no dictionary file and no postprocess.dictionary_metadata_key")
        path, source = files.require(recipe, "model"), f"meta:{key}"
    try:
        lines = _read_lines(path) if source == "file" else _read_onnx_metadata(path, source[5:])
    except UnicodeDecodeError as exc:
        raise ModelCorruptError(recipe.id, str(path), f"dictionary is not UTF-8: {exc}") from exc
    return charset_from_lines(lines, post)


def ctc_greedy(probs: np.ndarray, charset: tuple[str, ...], blank: int = 0) -> list[tuple[str, float]]:
    """(text, confidence) per row of (N, T, C) class probabilities.

    Repeats collapse, blanks drop; confidence is the mean of the kept steps' probabilities, each
    rounded to 5 decimals, the mean rounded to 5 decimals (0 when nothing is kept), as Immich reports it.
    """
    if probs.ndim != 3:
        raise ModelMismatchError(f"recogniser output must be (N, T, C), got {probs.shape}")
    if probs.shape[2] != len(charset):
        raise ModelMismatchError(
            f"recogniser has {probs.shape[2]} classes but the dictionary gives {len(charset)} (blank + characters + space)"
        )
    idx = probs.argmax(axis=2)
    best = np.take_along_axis(probs, idx[..., None], axis=2)[..., 0]
    keep = idx != blank
    keep[:, 1:] &= idx[:, 1:] != idx[:, :-1]
    out: list[tuple[str, float]] = []
    for row_idx, row_p, row_keep in zip(idx, best, keep):
        chosen = row_idx[row_keep]
        if len(chosen) == 0:
            out.append(("", 0.0))
            continue
        conf = [round(p, 5) for p in row_p[row_keep].tolist()]
        out.append(("".join(charset[i] for i in chosen.tolist()), float(np.mean(conf).round(5))))
    return out
