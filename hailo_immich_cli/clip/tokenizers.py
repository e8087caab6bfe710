"""Text -> token ids for the CLIP text encoders, exactly as each reference model expects them.

Three kinds, chosen by a recipe's `[tokenizer] kind`:
- `clip-bpe`: CLIP's byte-level BPE (OpenAI vocab, 49,408 ids), used by TinyCLIP and OpenAI CLIP
  on the Hailo. Pre-tokenisation follows CLIP's rules (contractions, runs of Unicode letters
  \\p{L}, single digits \\p{N}, runs of other non-space characters), so non-English text and
  numbers tokenise like the reference instead of being mangled.
- `sentencepiece`: SigLIP's SentencePiece model; EOS appended, padded with the pad id.
- `hf-json`: a Hugging Face `tokenizer.json` run through the `tokenizers` library with the same
  calls Immich's service makes, so Immich's own exports get byte-identical token ids.

Text is cleaned the way Immich does before any of them: whitespace runs collapse to one space
(and, for `canonicalize` models such as SigLIP, ASCII punctuation is removed and text lower-cased).
"""

from __future__ import annotations

import gzip
import json
import string
import threading
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from hailo_immich_cli.errors import BadInputError, ModelCorruptError

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, canonicalize: bool = False) -> str:
    """Immich's text cleaning: collapse whitespace; with canonicalize also drop punctuation and lower-case."""
    text = " ".join(text.split())
    if canonicalize:
        text = text.translate(_PUNCTUATION).lower()
    return text


class TextTokenizer(Protocol):
    context_length: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(N, context_length) int64 token ids, special tokens added, truncated and padded."""


# ---- CLIP byte-level BPE --------------------------------------------------------------------

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
# Special tokens first, then CLIP's contractions, letter runs, single digits, other symbol runs.
_CLIP_SPLIT = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+"


@lru_cache(maxsize=1)
def byte_alphabet() -> tuple[str, ...]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (index = byte value).

    Bytes that are already visible Latin-1 characters stand for themselves; the others
    (controls, space, a few gaps) are moved to code points 256 and up, in byte order.
    """
    visible = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    out, extra = [], 0
    for b in range(256):
        if b in visible:
            out.append(chr(b))
        else:
            out.append(chr(256 + extra))
            extra += 1
    return tuple(out)


class ClipBpeTokenizer:
    """CLIP's BPE over a merges list; ids: bytes, bytes+'</w>', one per merge, then SOT and EOT."""

    def __init__(self, merges: Sequence[tuple[str, str]], context_length: int = 77, pad_id: int = 0, lowercase: bool = True):
        import regex

        # Vocabulary order: the stand-ins of the visible bytes first, then those of the moved ones.
        alphabet = sorted(byte_alphabet(), key=lambda ch: (ord(ch) >= 256, ord(ch)))
        vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [SOT, EOT]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.ranks: dict[tuple[str, str], int] = {tuple(m): i for i, m in enumerate(merges)}  # type: ignore[misc]
        self.sot_id, self.eot_id = self.encoder[SOT], self.encoder[EOT]
        self.context_length, self.pad_id, self.lowercase = context_length, pad_id, lowercase
        self._split = regex.compile(_CLIP_SPLIT, regex.IGNORECASE)
        self._bytes = byte_alphabet()
        self._cache: dict[str, tuple[str, ...]] = {SOT: (SOT,), EOT: (EOT,)}
        self._lock = threading.Lock()

    @classmethod
    def from_vocab_file(cls, path: Path, n_merges: int = 48894, **kwargs: Any) -> "ClipBpeTokenizer":
        """Read OpenAI's `bpe_simple_vocab_16e6.txt.gz` (a header line, then one merge per line)."""
        try:
            raw = gzip.decompress(Path(path).read_bytes()).decode("utf-8")
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ModelCorruptError("(tokenizer)", str(path), f"not a gzip BPE vocab: {exc}") from exc
        lines = raw.split("\n")[1 : n_merges + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != n_merges or any(len(m) != 2 for m in merges):
            raise ModelCorruptError("(tokenizer)", str(path), f"expected {n_merges} merge lines of two symbols")
        return cls(merges, **kwargs)  # type: ignore[arg-type]

    def _bpe(self, piece: str) -> tuple[str, ...]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        symbols = list(piece[:-1]) + [piece[-1] + "</w>"]
        while len(symbols) > 1:
            best, best_rank = -1, None
            for i in range(len(symbols) - 1):
                rank = self.ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best_rank is None:
                break
            first, second = symbols[best], symbols[best + 1]
            merged: list[str] = []
            i = 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        result = tuple(symbols)
        with self._lock:
            if len(self._cache) > 50_000:
                self._cache = {SOT: (SOT,), EOT: (EOT,)}
            self._cache[piece] = result
        return result

    def normalize(self, text: str) -> str:
        """Whitespace collapse (Immich), NFC and lower-case (the CLIP tokenizer's own normaliser)."""
        text = unicodedata.normalize("NFC", clean_text(text))
        return text.lower() if self.lowercase else text

    def encode(self, text: str) -> list[int]:
        """Token ids of one text without SOT/EOT."""
        ids: list[int] = []
        for match in self._split.finditer(self.normalize(text)):
            token = match.group(0)
            if token in (SOT, EOT):
                ids.append(self.encoder[token])
                continue
            mapped = "".join(self._bytes[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(mapped))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text)[: self.context_length - 2] + [self.eot_id]
            out[row, : len(ids)] = ids
        return out


# ---- SentencePiece (SigLIP) -----------------------------------------------------------------


class SentencePieceTokenizer:
    """SigLIP's text side: canonicalised text, SentencePiece ids, EOS appended (kept on truncation), padded."""

    def __init__(self, model_path: Path, context_length: int = 64, eos_id: int = 1, pad_id: int = 1, canonicalize: bool = True):
        import sentencepiece

        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            ok = self._sp.Load(str(model_path))
        except (OSError, RuntimeError) as exc:
            raise ModelCorruptError("(tokenizer)", str(model_path), f"not a SentencePiece model: {exc}") from exc
        if not ok:
            raise ModelCorruptError("(tokenizer)", str(model_path), "not a SentencePiece model")
        self.context_length, self.eos_id, self.pad_id, self.canonicalize = context_length, eos_id, pad_id, canonicalize
        self.eot_id = eos_id

    def encode(self, text: str) -> list[int]:
        return list(self._sp.EncodeAsIds(clean_text(text, self.canonicalize)))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.encode(text)[: self.context_length - 1] + [self.eos_id]
            out[row, : len(ids)] = ids
        return out


# ---- Hugging Face tokenizer.json (Immich's exports) -----------------------------------------


class HfJsonTokenizer:
    """Immich's exports: their `tokenizer.json` + `tokenizer_config.json`, configured as Immich configures them."""

    def __init__(self, tokenizer_json: Path, tokenizer_config: Path | None, context_length: int, canonicalize: bool = False,
                 pad_token: str | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelCorruptError("(tokenizer)", str(tokenizer_json), f"the 'tokenizers' package is needed: {exc}") from exc
        try:
            self._tok = Tokenizer.from_file(str(tokenizer_json))
        except Exception as exc:  # the Rust side raises a plain Exception for a bad file
            raise ModelCorruptError("(tokenizer)", str(tokenizer_json), f"not a tokenizer.json: {str(exc)[:200]}") from exc
        if tokenizer_config is not None:
            try:
                config = json.loads(Path(tokenizer_config).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ModelCorruptError("(tokenizer)", str(tokenizer_config), f"not JSON: {exc}") from exc
            pad = config.get("pad_token")
            pad_token = pad.get("content") if isinstance(pad, dict) else (pad or pad_token)
        if not pad_token:
            raise ModelCorruptError("(tokenizer)", str(tokenizer_config), "no pad_token")
        pad_id = self._tok.token_to_id(pad_token)
        if pad_id is None:
            raise ModelCorruptError("(tokenizer)", str(tokenizer_json), f"pad token {pad_token!r} is not in the vocabulary")
        self._tok.enable_padding(length=context_length, pad_token=pad_token, pad_id=pad_id)
        self._tok.enable_truncation(max_length=context_length)
        self.context_length, self.pad_id, self.canonicalize = context_length, pad_id, canonicalize

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.encode_with_mask(texts)[0]

    def encode_with_mask(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask), both (N, context_length): M-CLIP text encoders take both."""
        cleaned = [clean_text(t, self.canonicalize) for t in texts]
        # One text (every search request) skips encode_batch: it hands the text to the library's
        # thread pool, whose wake-up and spinning cost more than the encoding on a busy 2-core host.
        encodings = [self._tok.encode(cleaned[0])] if len(cleaned) == 1 else self._tok.encode_batch(cleaned)
        shape = (len(texts), self.context_length)
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(shape)
        return ids, np.asarray([e.attention_mask for e in encodings], dtype=np.int64).reshape(shape)


# ---- construction from a recipe -------------------------------------------------------------


def _json_file(path: Path | None) -> Mapping[str, Any]:
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorruptError("(tokenizer)", str(path), f"not JSON: {exc}") from exc


def build_tokenizer(spec: Mapping[str, Any], files: Mapping[str, Path | None]) -> TextTokenizer:
    """A tokenizer from a recipe's `[tokenizer]` table and the resolved paths of its files by role.

    `context_length`/`canonicalize` may come from Immich's `config.json` (`text_cfg`), as Immich reads them.
    """
    kind = spec.get("kind")
    config = _json_file(files.get("config"))
    text_cfg = config.get("text_cfg", {}) if isinstance(config, dict) else {}
    context_length = int(text_cfg.get("context_length", spec.get("context_length", 77)))
    canonicalize = bool(spec.get("canonicalize", False)) or text_cfg.get("tokenizer_kwargs", {}).get("clean") == "canonicalize"
    if kind == "clip-bpe":
        vocab = files.get("vocab")
        assert vocab is not None
        return ClipBpeTokenizer.from_vocab_file(vocab, n_merges=int(spec.get("merges", 48894)), context_length=context_length,
                                                pad_id=int(spec.get("pad_id", 0)))
    if kind == "sentencepiece":
        model = files.get("vocab")
        assert model is not None
        return SentencePieceTokenizer(model, context_length=context_length, eos_id=int(spec.get("eos_id", 1)),
                                      pad_id=int(spec.get("pad_id", 1)), canonicalize=canonicalize)
    if kind == "hf-json":
        tok = files.get("tokenizer")
        assert tok is not None
        return HfJsonTokenizer(tok, files.get("tokenizer_config"), context_length, canonicalize, spec.get("pad_token"))
    raise BadInputError(f"unknown tokenizer kind {kind!r} (clip-bpe, sentencepiece, hf-json)")
