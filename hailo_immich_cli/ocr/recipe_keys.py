"""The recipe keys of the OCR tasks (checked on load by models/schema.py), by recipe task and section."""

from __future__ import annotations

from hailo_immich_cli.models.schema import IMAGE_PRE, Key, allowed

RECIPE_KEYS: dict[str, dict[str, dict[str, Key]]] = {
    "ocr-detection": {
        "preprocess": {
            **IMAGE_PRE,
            "resize": allowed("str", "short-side", "tiles"),  # ocr/detect.py, ocr/pipeline.py
            "max_resolution": allowed("int"), "min_side": allowed("int"), "multiple": allowed("int"),
            "min_scale": allowed("float"), "tile_overlap": allowed("int"), "max_tiles": allowed("int"),
        },
        "postprocess": {  # ocr.binarize.DbParams
            "binary_threshold": allowed("float"), "box_threshold": allowed("float"), "unclip_ratio": allowed("float"),
            "min_size": allowed("int"), "max_candidates": allowed("int"), "dilate": allowed("bool"),
        },
    },
    "ocr-recognition": {
        "preprocess": {
            **IMAGE_PRE,
            "height": allowed("int"), "width": allowed("int"),  # ocr/recognize.py
            "width_mode": allowed("str", "dynamic", "fixed"),
            "divisor": allowed("float"), "max_squeeze": allowed("float"), "pad_value": allowed("int"),
        },
        "postprocess": {  # ocr/ctc.py, ocr/pipeline.py, ocr/task.py
            "append_space": allowed("bool"), "dictionary_offset": allowed("int"), "dictionary_metadata_key": allowed("str"),
            "min_score": allowed("float"),
            "blank_index": allowed("int", 0),  # ctc_greedy assumes the blank is class 0
        },
    },
}
