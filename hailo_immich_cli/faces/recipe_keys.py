"""The recipe keys of the face tasks (checked on load by models/schema.py), by recipe task and section."""

from __future__ import annotations

from hailo_immich_cli.models.schema import IMAGE_PRE, Key, allowed

RECIPE_KEYS: dict[str, dict[str, dict[str, Key]]] = {
    "face-detection": {
        "preprocess": {
            **IMAGE_PRE,
            "size": allowed("int_list"),       # faces.detect.plan_letterbox: fixed [H, W] canvas
            "max_side": allowed("int"),        # dynamic canvas (CenterFace)
            "multiple": allowed("int"),
            "letterbox": allowed("str", "top-left", "center"),
        },
        "postprocess": {
            "kind": allowed("str", "scrfd", "centerface"),  # faces.detect.DECODERS
            "layout": allowed("str", "flat", "nhwc"),
            "strides": allowed("int_list"), "num_anchors": allowed("int"), "stride": allowed("int"),
            "score_activation": allowed("str", "sigmoid", "none"),  # only "sigmoid" changes anything
            "score_threshold": allowed("float"), "nms_threshold": allowed("float"), "nms_plus_one": allowed("bool"),
            "max_faces": allowed("int"),  # faces/pipeline.py
            "anchor_offset": allowed("float"),  # faces/decoders.scrfd_anchor_centers: centre at (index + offset) * stride
        },
    },
    "face-recognition": {
        "preprocess": {
            **IMAGE_PRE,
            "align_template": allowed("points"),    # faces/embed.py
            "crop_size": allowed("int"),
            "mean_std_from_graph": allowed("bool"),
        },
    },
}
