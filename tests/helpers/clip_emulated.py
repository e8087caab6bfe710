"""Twins for the Hailo CLIP recipes on the hailo_platform test double, and the float references
they are checked against. Everything run through them is EMULATED, never a hardware result.

The twins stand for the compiled networks: they see what the chip sees (dequantised inputs) and do
what the HEF is documented to do on-chip (image normalisation; positional embeddings added inside
the text encoder). Each twin's maths is a fixed, seeded function, so a test can compute the same
function in float on the host from first principles (its own resize, its own token ids) and compare
with what came back through the pipeline, the backend and two quantisations.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# On-chip normalisation the HEFs are documented to compile in (recipe comments, hailo.md §1.6).
CLIP_MEAN, CLIP_STD = (122.77, 116.75, 104.09), (68.50, 66.63, 70.32)
SIGLIP_MEAN, SIGLIP_STD = (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)
ON_CHIP_NORM = {
    "clip-vit-b32-visual-hailo": (CLIP_MEAN, CLIP_STD),
    "tinyclip-vit-39m-16-visual-hailo": (CLIP_MEAN, CLIP_STD),
    "siglip-b16-visual-hailo": (SIGLIP_MEAN, SIGLIP_STD),
}
SAMPLES = 4096  # pixels the image twin reads: enough to see resize filter, crop offset and normalisation


@dataclass(frozen=True)
class ImageNet:
    """out = z[fixed pixels] @ W / 64, z = (pixels - mean) / std: a linear map of the normalised input."""

    mean: np.ndarray
    std: np.ndarray
    picks: np.ndarray  # (SAMPLES,) flat indices into 224*224*3
    weights: np.ndarray  # (SAMPLES, D)

    @classmethod
    def for_recipe(cls, recipe_id: str, dim: int, size: int = 224, seed: int = 7) -> ImageNet:
        rng = np.random.default_rng(seed)
        mean, std = ON_CHIP_NORM[recipe_id]
        return cls(np.asarray(mean, np.float32), np.asarray(std, np.float32),
                   rng.choice(size * size * 3, SAMPLES, replace=False), rng.standard_normal((SAMPLES, dim)).astype(np.float32))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 224, 224, 3) float pixels 0..255 -> (N, D)."""
        z = (np.asarray(pixels, np.float32) - self.mean) / self.std
        # frame by frame: a BLAS call's rounding may depend on the batch size, a device's does not
        return np.stack([frame.reshape(-1)[self.picks] @ self.weights / 64.0 for frame in z])

    def twin(self, layer_in: str, layer_out: str):
        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            x = inputs[layer_in]
            return {layer_out: self(x).reshape(len(x), 1, 1, -1)}

        return run


def reference_resize(rgb: np.ndarray, mode: str, size: int = 224) -> np.ndarray:
    """The recipe's geometry written out from its description (not via clip.resize_for_clip)."""
    img = Image.fromarray(rgb)
    w, h = img.size
    if mode == "squash":  # SigLIP: bilinear squash to size x size
        return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR))
    if mode == "crop-resize":  # TinyCLIP: centre square, bilinear resize
        s = min(w, h)
        x0, y0 = (w - s) // 2, (h - s) // 2
        return np.asarray(img.crop((x0, y0, x0 + s, y0 + s)).resize((size, size), Image.Resampling.BILINEAR))
    if mode == "shortest-crop":  # OpenAI CLIP / Immich: bicubic shorter side to size, int() centre crop
        scale = size / min(w, h)
        new = (size, int(h * scale)) if w <= h else (int(w * scale), size)
        img = img.resize(new, Image.Resampling.BICUBIC)
        left, top = int((new[0] - size) / 2), int((new[1] - size) / 2)
        return np.asarray(img.crop((left, top, left + size, top + size)))
    raise ValueError(mode)


# ---- text ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextNet:
    """A causal stand-in text encoder: h = tokens (+ positional, on-chip); c_t = mean(h_0..h_t);
    out_t = tanh((h_t + c_t) @ A). Row t depends on every earlier token and on position."""

    positional: np.ndarray  # (L, W): what the chip adds
    mix: np.ndarray  # (W, W)

    @classmethod
    def make(cls, positional: np.ndarray, seed: int = 11) -> TextNet:
        w = positional.shape[1]
        return cls(positional.astype(np.float32), (np.random.default_rng(seed).standard_normal((w, w)) / np.sqrt(w)).astype(np.float32))

    def sequence(self, tokens: np.ndarray, add_positional: bool = True) -> np.ndarray:
        """(N, L, W) token rows -> (N, L, W)."""
        h = np.asarray(tokens, np.float32) + (self.positional[None] if add_positional else 0.0)
        c = np.cumsum(h, axis=1) / np.arange(1, h.shape[1] + 1, dtype=np.float32)[None, :, None]
        return np.stack([np.tanh(frame @ self.mix) for frame in h + c])  # frame by frame, as a device

    def twin(self, layer_in: str, layer_out: str, *, add_positional: bool = True, length: int, pooled_weights: np.ndarray | None = None):
        """The HEF: input frames (N, *frame) of `length` token rows; output the whole sequence,
        or (pooled_weights given, SigLIP) one vector: the position-weighted sum of the sequence."""

        def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            x = np.asarray(inputs[layer_in], np.float32)
            seq = self.sequence(x.reshape(len(x), length, -1), add_positional)
            if pooled_weights is not None:
                return {layer_out: np.einsum("nlw,l->nw", seq, pooled_weights).reshape(len(x), 1, 1, -1)}
            return {layer_out: seq.reshape(len(x), 1, length, -1)}

        return run


def synthetic_text_weights(rng: np.random.Generator, vocab: int, length: int, width: int, dim: int, *, projection: bool) -> dict[str, np.ndarray]:
    """Arrays with the recipe's names and shapes; token and positional rows of similar size, so
    adding positionals twice (or never) changes the result clearly."""
    weights = {
        "token_embedding": (rng.standard_normal((vocab, width), dtype=np.float32) * 0.5),
        "positional_embedding": (rng.standard_normal((length, width), dtype=np.float32) * 0.5),
    }
    if projection:
        weights["text_projection"] = (rng.standard_normal((width, dim), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
    return weights


def clip_reference_ids(hf_tokenizer, texts: list[str], length: int = 77) -> np.ndarray:
    """CLIP ids from a Hugging Face `tokenizers` CLIP tokenizer (SOT ... EOT), 0-padded as open_clip."""
    out = np.zeros((len(texts), length), np.int64)
    for row, text in enumerate(texts):
        ids = hf_tokenizer.encode(text).ids[:length]
        out[row, : len(ids)] = ids
    return out


def siglip_reference_ids(sp_model: Path, texts: list[str], length: int = 64, eos: int = 1, pad: int = 1) -> np.ndarray:
    """SigLIP ids: lower-case, ASCII punctuation removed, whitespace collapsed; SentencePiece; EOS; pad."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    out = np.full((len(texts), length), pad, np.int64)
    for row, text in enumerate(texts):
        clean = re.sub(r"\s+", " ", text.translate(str.maketrans("", "", string.punctuation))).strip().lower()
        ids = sp.encode(clean)[: length - 1] + [eos]
        out[row, : len(ids)] = ids
    return out


def train_tiny_spiece(directory: Path) -> Path:
    """A small SentencePiece model with SigLIP's special ids (pad 0, eos 1, unk 2), trained offline:
    google/siglip-base-patch16-224's spiece.model is not reachable from this machine."""
    import sentencepiece as spm

    directory.mkdir(parents=True, exist_ok=True)
    corpus = directory / "corpus.txt"
    corpus.write_text("\n".join(["a photo of a cat", "a photo of a dog on the beach", "the astronaut on the moon",
                                 "a picture of the beach at sunset", "mountains and lakes in summer", "snow in the city at night",
                                 "two people walking a dog", "a red car parked near a house"] * 30), encoding="utf-8")
    spm.SentencePieceTrainer.Train(input=str(corpus), model_prefix=str(directory / "spiece"), vocab_size=60, hard_vocab_limit=False, model_type="unigram",
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return directory / "spiece.model"


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def quantisation_tolerance(raw: np.ndarray, step: float, components: int, gain: float = 1.0) -> np.ndarray:
    """Bound on |unit(raw + e @ M) - unit(raw)| (L2) when each of the device output's `components`
    values moved by at most step/2 and the host then applied a matrix M of spectral norm `gain`."""
    return 2.0 * gain * (step / 2.0) * np.sqrt(components) / np.linalg.norm(raw, axis=-1)
