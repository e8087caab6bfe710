"""The known ways a Hailo recipe can disagree with its CPU reference, each as a recipe variant.

Every hypothesis is one recipe setting changed (the same keys a user edits: colour order,
letterbox placement, anchor offset, output names, CLIP text-path flags, OCR dictionary offset and
space class). `doctor --compare` runs each variant; the one that brings agreement back is the cause,
and its changed setting is the fix.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Callable

from hailo_immich_cli.clip.task import TEXTUAL
from hailo_immich_cli.faces.task import DETECTION as FACE_DETECTION
from hailo_immich_cli.models.hef import HefFormatError, read_hef
from hailo_immich_cli.ocr.task import RECOGNITION as OCR_RECOGNITION
from hailo_immich_cli.models.recipes import Recipe, parse_recipe


@dataclass(frozen=True)
class Hypothesis:
    cause: str
    fix: str  # the recipe setting that fixes it, as a user writes it
    variant: Recipe


def variant_of(recipe: Recipe, change: Callable[[dict[str, Any]], None]) -> Recipe:
    """The recipe with `change` applied to a copy of its TOML data (validated like a file on load);
    its files stay as they are, so the variant loads the same model files."""
    data = copy.deepcopy(dict(recipe.raw))
    change(data)
    parsed = parse_recipe(recipe.path, data)
    return dataclasses.replace(parsed, files=recipe.files)


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        data.setdefault(section, {})[key] = value

    return change


def _toml(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else (f'"{value}"' if isinstance(value, str) else str(value))


def _one(recipe: Recipe, cause: str, section: str, key: str, value: Any) -> Hypothesis:
    return Hypothesis(cause, f"recipe {recipe.id}: [{section}] {key} = {_toml(value)}", variant_of(recipe, _set(section, key, value)))


def colour(recipe: Recipe) -> list[Hypothesis]:
    if recipe.task == TEXTUAL:
        return []
    current = recipe.preprocess.get("color", "RGB")
    other = "BGR" if current == "RGB" else "RGB"
    return [_one(recipe, f"RGB vs BGR: the HEF expects {other} input, the recipe feeds {current}", "preprocess", "color", other)]


def letterbox(recipe: Recipe) -> list[Hypothesis]:
    if recipe.task != FACE_DETECTION or "size" not in recipe.preprocess:
        return []
    current = recipe.preprocess.get("letterbox", "top-left")
    other = "center" if current == "top-left" else "top-left"
    return [_one(recipe, f"letterbox: the HEF's boxes are for a {other} letterbox, the recipe places the image {current}",
                 "preprocess", "letterbox", other)]


def anchor_offset(recipe: Recipe) -> list[Hypothesis]:
    if recipe.task != FACE_DETECTION or recipe.postprocess.get("kind") != "scrfd":
        return []
    current = float(recipe.postprocess.get("anchor_offset", 0.0))
    other = 0.5 if current == 0.0 else 0.0
    return [_one(recipe, f"anchor centres offset by half a stride: the HEF's distances are from (index + {other}) * stride, "
                         f"the recipe decodes from (index + {current:g}) * stride", "postprocess", "anchor_offset", other)]


def _describe(spec: dict[str, Any], index: int) -> str:
    parts = [f"{k} {spec[k]!r}" for k in ("role", "stride") if k in spec]
    return f"outputs[{index}]" + (f" ({', '.join(parts)})" if parts else "")


def _rename(recipe: Recipe, names: dict[int, str], cause: str) -> Hypothesis:
    def change(data: dict[str, Any]) -> None:
        for index, name in names.items():
            data["outputs"][index]["name"] = name

    specs = recipe.raw.get("outputs", [])
    fix = "; ".join(f"{_describe(specs[i], i)} name = \"{n}\"" for i, n in sorted(names.items()))
    return Hypothesis(cause, f"recipe {recipe.id}: {fix}", variant_of(recipe, change))


def output_order(recipe: Recipe, model_path: Path | None) -> list[Hypothesis]:
    """Outputs renamed to the HEF layers of the same shape, and swaps among same-shape outputs."""
    specs = list(recipe.raw.get("outputs", []))
    named = [i for i, s in enumerate(specs) if s.get("name") and s.get("shape")]
    if recipe.backend != "hailo" or len(named) < 2:
        return []
    found: list[Hypothesis] = []
    cause = "output layers matched in the wrong order: the recipe's output names point at other layers of the HEF"
    layers = []
    if model_path is not None:
        try:
            layers = list(read_hef(model_path, verify=False).network_groups[0].outputs)
        except (HefFormatError, IndexError):
            layers = []
    if layers:
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for layer in layers:
            by_shape.setdefault(tuple(layer.shape), []).append(layer.name)
        mapping = {}
        for i in named:
            candidates = by_shape.get(tuple(specs[i]["shape"]), [])
            if len(candidates) == 1:
                mapping[i] = candidates[0]
        changed = {i: n for i, n in mapping.items() if n != specs[i]["name"]}
        if changed and len(set(mapping.values())) == len(mapping):
            found.append(_rename(recipe, changed, cause))
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in named:
        groups.setdefault(tuple(specs[i]["shape"]), []).append(i)
    for members in groups.values():
        for a, b in combinations(members, 2):
            found.append(_rename(recipe, {a: specs[b]["name"], b: specs[a]["name"]}, cause))
    return found


def clip_text(recipe: Recipe) -> list[Hypothesis]:
    text = recipe.raw.get("text", {})
    if recipe.task != TEXTUAL or text.get("feed") != "token-embeddings":
        return []
    pos, ln = bool(text.get("add_positional_on_host", False)), bool(text.get("final_layer_norm_on_host", False))
    pos_cause = ("positional embedding added twice: the HEF adds it and so does the host" if pos
                 else "positional embedding missing: the HEF does not add it, so the host must")
    ln_cause = ("final LayerNorm applied twice: it is inside the HEF and the host applies it too" if ln
                else "final LayerNorm missing: it is outside the HEF, so the host must apply it")
    both = variant_of(recipe, lambda d: d["text"].update(add_positional_on_host=not pos, final_layer_norm_on_host=not ln))
    return [
        _one(recipe, pos_cause, "text", "add_positional_on_host", not pos),
        _one(recipe, ln_cause, "text", "final_layer_norm_on_host", not ln),
        Hypothesis(f"{pos_cause}; and {ln_cause}", f"recipe {recipe.id}: [text] add_positional_on_host = {_toml(not pos)}, "
                   f"final_layer_norm_on_host = {_toml(not ln)}", both),
    ]


def ocr_classes(recipe: Recipe) -> list[Hypothesis]:
    """Dictionary offset by one either way (keeping the class count, so the space class gives way),
    and the space class alone (a HEF with one class fewer or more than the recipe expects)."""
    if recipe.task != OCR_RECOGNITION:
        return []
    post = recipe.postprocess
    offset = int(post.get("dictionary_offset", 1))
    space = bool(post.get("append_space", True))

    def both(new_offset: int, new_space: bool) -> Hypothesis:
        cause = f"OCR dictionary offset by one: class k is character k-{new_offset}, the recipe reads k-{offset}"
        if new_space != space:
            cause += "; " + ("no space class" if not new_space else "the last class is the space")
        change = lambda d: d.setdefault("postprocess", {}).update(dictionary_offset=new_offset, append_space=new_space)  # noqa: E731
        return Hypothesis(cause, f"recipe {recipe.id}: [postprocess] dictionary_offset = {new_offset}, append_space = {_toml(new_space)}",
                          variant_of(recipe, change))

    found = [both(offset + 1, False)]
    if offset >= 1:
        found.append(both(offset - 1, True))
    space_cause = "space class missing: the HEF's last class is the space" if not space else "no space class: the HEF's last class is a character"
    found.append(_one(recipe, space_cause, "postprocess", "append_space", not space))
    return found


def hypotheses_for(recipe: Recipe, model_path: Path | None) -> list[Hypothesis]:
    """Every known cause that applies to this recipe's task, as recipe variants."""
    return [*output_order(recipe, model_path), *colour(recipe), *letterbox(recipe), *anchor_offset(recipe),
            *clip_text(recipe), *ocr_classes(recipe)]
