"""The recipe keys of the CLIP tasks (checked on load by models/schema.py), by recipe task and section."""

from __future__ import annotations

from hailo_immich_cli.models.schema import IMAGE_PRE, Key, allowed

PAIR = {"pair": allowed("str")}  # clip/pipeline.py: the other tower's recipe id
TEXT = {  # clip.text_feed / text_vectors
    "feed": allowed("str", "token-ids", "token-embeddings"),
    "output": allowed("str", "pooled", "eot-projection"),
    "eot_id": allowed("int"), "add_positional_on_host": allowed("bool"), "final_layer_norm_on_host": allowed("bool"),
}
TOKENIZER = {  # tokenizers.build_tokenizer
    "kind": allowed("str", "clip-bpe", "sentencepiece", "hf-json"),
    "context_length": allowed("int"), "canonicalize": allowed("bool"), "merges": allowed("int"),
    "pad_id": allowed("int"), "eos_id": allowed("int"), "pad_token": allowed("str"),
}
WEIGHTS = {  # weights.extract_text_weights, clip._load_weights
    "checkpoint": allowed("str"), "strip_prefixes": allowed("str_list"),
    "tensors": Key("tables", fields={
        "name": allowed("str"), "shape": allowed("int_list"), "keys": allowed("str_list"), "linear_keys": allowed("str_list"),
        "optional": allowed("bool"),
    }),
}

RECIPE_KEYS: dict[str, dict[str, dict[str, Key]]] = {
    "clip-visual": {
        "preprocess": {
            **IMAGE_PRE,
            "size": allowed("int"),  # clip._size
            "resize": allowed("str", "shortest-crop", "crop-resize", "squash"),
            "interpolation": allowed("str", "bicubic", "bilinear", "lanczos", "nearest", "box"),  # clip._FILTERS
        },
        # `textual`: the older spelling of clip.pair (clip/pipeline.declared_pair)
        "top": {"clip": Key("table", fields=PAIR), "textual": allowed("str")},
    },
    "clip-textual": {
        "preprocess": {"normalize": allowed("str")},
        "top": {
            "clip": Key("table", fields=PAIR), "text": Key("table", fields=TEXT),
            "tokenizer": Key("table", fields=TOKENIZER), "weights": Key("table", fields=WEIGHTS),
        },
    },
}
