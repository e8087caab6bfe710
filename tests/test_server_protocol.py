"""The /predict protocol without HTTP: entries parsing (official statuses and bodies) and exact JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from hailo_immich_cli.errors import UnknownModelError
from hailo_immich_cli.faces.task import faces_json
from hailo_immich_cli.ocr.task import ocr_json
from hailo_immich_cli.server import protocol
from hailo_immich_cli.server.jsonfmt import NonFiniteError, dumps, float32_array, format_float
from hailo_immich_cli.server.protocol import ProtocolError, parse_entries

orjson = pytest.importorskip("orjson")  # the official service's encoder: the oracle for our bytes

KNOWN = {
    ("face-detection", "buffalo_l"): "det",
    ("face-recognition", "buffalo_l"): "rec",
    ("clip-visual", "ViT-B-32__openai"): "clip-v",
    ("clip-textual", "ViT-B-32__openai"): "clip-t",
    ("ocr-detection", "PP-OCRv5_mobile"): "ocr-det",
    ("ocr-recognition", "PP-OCRv5_mobile"): "ocr-rec",
}
DEFAULTS = {"face-detection": "det-default", "clip-visual": "clip-default"}


def resolve(task: str, name: str | None) -> str:
    """Stands for session.resolve(...).id over a fixed recipe table (same contract: UnknownModelError)."""
    from hailo_immich_cli.models.recipes import clean_immich_name

    if name is None:
        if task in DEFAULTS:
            return DEFAULTS[task]
        raise UnknownModelError(f"no recipe for {task}")
    for (t, n), rid in KNOWN.items():
        if t == task and clean_immich_name(n) == clean_immich_name(name):
            return rid
    raise UnknownModelError(f"no recipe for {task} reproduces '{name}'")


def error_of(raw, **kw) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_entries(raw, resolve, **kw)
    return info.value


FACES = {"facial-recognition": {"detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}}, "recognition": {"modelName": "buffalo_l"}}}
OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}


def test_immich_requests_parse_in_order_with_options():
    raw = json.dumps({**OCR, **FACES, "clip": {"visual": {"modelName": "ViT-B-32__openai"}}})
    plan = parse_entries(raw, resolve)
    assert plan.tasks == ["ocr", "facial-recognition", "clip"]
    assert [e.recipe_id for e in plan.entries] == ["ocr-det", "ocr-rec", "det", "rec", "clip-v"]
    assert plan.get("ocr", "detection").options == {"minScore": 0.5, "maxResolution": 736}
    assert plan.get("ocr", "recognition").options == {"minScore": 0.8}
    assert plan.get("facial-recognition", "recognition").options == {}


def test_model_names_are_cleaned_like_immich():
    plan = parse_entries('{"clip":{"visual":{"modelName":"immich-app/ViT-B-32::openai"}}}', resolve)
    assert plan.entries[0].recipe_id == "clip-v"


def test_extra_keys_and_unknown_options_are_ignored():
    raw = '{"clip":{"textual":{"modelName":"ViT-B-32__openai","options":{"language":"en-null"},"extra":1}}}'
    plan = parse_entries(raw, resolve)
    assert plan.entries[0].options == {}


def test_missing_entries_is_fastapi_422():
    err = error_of(None)
    assert err.status == 422
    assert err.body == b'{"detail":[{"type":"missing","loc":["body","entries"],"msg":"Field required","input":null}]}'


@pytest.mark.parametrize(
    "raw",
    ["not json", "[]", '"text"', "42", "null", '{"clip":"ViT"}', '{"clip":[1]}', '{"clip":null}', '{"clip":{"visual":{}}}',
     '{"clip":{"visual":{"modelName":1}}}', '{"clip":{"visual":{"modelName":null}}}', "", "{", '{"a":NaN}', "[" * 100000],
)
def test_malformed_entries_are_422_invalid_format(raw):
    err = error_of(raw)
    assert (err.status, err.body) == (422, b'{"detail":"Invalid request format."}')


@pytest.mark.parametrize("raw", ['{"clip":{"visual":"ViT-B-32__openai"}}', '{"clip":{"visual":[1]}}', '{"clip":{"visual":{"modelName":"ViT-B-32__openai","options":null}}}'])
def test_non_object_step_or_options_is_500(raw):
    err = error_of(raw)
    assert err.status == 500 and json.loads(err.body)["detail"]


@pytest.mark.parametrize("raw", ['{"foo":{"visual":{"modelName":"x"}}}', '{"clip":{"vision":{"modelName":"ViT-B-32__openai"}}}'])
def test_unknown_task_or_type_is_500(raw):
    err = error_of(raw)
    assert err.status == 500 and "Unknown model combination" in json.loads(err.body)["detail"]


def test_unknown_model_strict_is_500_with_clear_message():
    err = error_of('{"clip":{"visual":{"modelName":"nope"}}}')
    assert err.status == 500 and err.reason == "Model Not Served"
    detail = json.loads(err.body)["detail"]
    assert "'nope'" in detail and "clip/visual" in detail and "--model-names ignore" in detail


def test_empty_model_name_is_unknown_not_default():
    err = error_of('{"clip":{"visual":{"modelName":""}}}')
    assert err.status == 500 and err.reason == "Model Not Served"
    assert parse_entries('{"clip":{"visual":{"modelName":" "}}}', resolve, policy="ignore").entries[0].recipe_id == "clip-default"


def test_unknown_model_ignore_uses_the_default():
    plan = parse_entries('{"clip":{"visual":{"modelName":"nope"}}}', resolve, policy="ignore")
    assert plan.entries[0].recipe_id == "clip-default"
    err = error_of('{"clip":{"textual":{"modelName":"nope"}}}', policy="ignore")  # no default for textual
    assert err.status == 500


@pytest.mark.parametrize("options", ['{"minScore":"0.7"}', '{"minScore":true}', '{"minScore":null}', '{"minScore":1e400}'])
def test_bad_option_values_are_422(options):
    err = error_of('{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":%s}}}' % options)
    assert err.status == 422


def test_max_resolution_is_an_integer_at_least_one():
    plan = parse_entries('{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"maxResolution":736.0}}}}', resolve)
    assert plan.entries[0].options["maxResolution"] == 736 and isinstance(plan.entries[0].options["maxResolution"], int)
    assert error_of('{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"maxResolution":0}}}}').status == 422


def test_inputs_and_dependencies():
    faces = parse_entries(json.dumps(FACES), resolve)
    with pytest.raises(ProtocolError) as info:
        protocol.check_inputs(faces, has_image=False, has_text=False)
    assert (info.value.status, info.value.body) == (400, b'{"detail":"Either image or text must be provided"}')
    with pytest.raises(ProtocolError) as info:
        protocol.check_inputs(faces, has_image=False, has_text=True)
    assert info.value.status == 400
    protocol.check_inputs(faces, has_image=True, has_text=True)  # image wins over text

    rec_only = parse_entries('{"facial-recognition":{"recognition":{"modelName":"buffalo_l"}}}', resolve)
    with pytest.raises(ProtocolError) as info:
        protocol.check_dependencies(rec_only)
    assert info.value.status == 400
    assert info.value.body == (
        b'{"detail":"Task facial-recognition of type recognition depends on output of '
        b"(<ModelType.DETECTION: 'detection'>, <ModelTask.FACIAL_RECOGNITION: 'facial-recognition'>)\"}"
    )
    ocr_rec_only = parse_entries('{"ocr":{"recognition":{"modelName":"PP-OCRv5_mobile"}}}', resolve)
    with pytest.raises(ProtocolError) as info:
        protocol.check_dependencies(ocr_rec_only)
    assert info.value.body == (
        b'{"detail":"Task ocr of type recognition depends on output of '
        b"(<ModelType.DETECTION: 'detection'>, <ModelTask.OCR: 'ocr'>)\"}"
    )
    det_only = parse_entries('{"facial-recognition":{"detection":{"modelName":"buffalo_l"}}}', resolve)
    with pytest.raises(ProtocolError) as info:
        protocol.check_dependencies(det_only)
    assert info.value.status == 500


# ---- JSON bytes ------------------------------------------------------------------------------


def test_float_formatting_matches_orjson_float32_and_float64():
    rng = np.random.default_rng(7)
    with np.errstate(over="ignore"):
        wide = (rng.standard_normal(20000) * 10.0 ** rng.integers(-45, 39, 20000)).astype(np.float32)
    values32 = np.concatenate([wide[np.isfinite(wide)], rng.standard_normal(20000).astype(np.float32) * 0.05,
                               np.round(rng.standard_normal(2000) * 1000).astype(np.float32),
                               np.float32([0.0, -0.0, 1e-6, 9.99999e-7, 1e13, 9.999999e12, 690, -89, 1 / 3])])
    for v in values32:
        assert format_float(v) == orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY).decode(), repr(v)
    for v in list(rng.random(5000)) + [round(x, 5) for x in rng.random(5000)] + [1e-5, 1e-6, 1e15, 1e16, 0.945, 0.99812]:
        assert format_float(float(v)) == orjson.dumps(float(v)).decode(), repr(v)


def test_embedding_string_is_orjson_float32_array():
    vec = np.random.default_rng(1).standard_normal(512).astype(np.float32)
    assert float32_array(vec) == orjson.dumps(vec, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    with pytest.raises(NonFiniteError):
        float32_array(np.float32([0.1, np.nan]))


def test_dumps_matches_orjson_on_mixed_documents():
    doc = {"ocr": {"box": [np.float32(0.099), np.float32(0.54285717)], "text": ["Hi42", "ÄÖ 漢字 \"q\" \\ \n\t\x01"],
                   "boxScore": [np.float32(0.48076746)], "textScore": [0.945]},
           "n": 800, "t": True, "f": False, "z": None, "l": [], "d": {}}
    assert dumps(doc) == orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True)
class _Face:  # the shape of faces.Face as the contract defines it
    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray | None


def test_faces_json_rounds_half_to_even_keeps_unclipped_and_sorts():
    emb = np.linspace(-2, 2, 512, dtype=np.float32)
    faces = [
        _Face((10.5, -89.4, 648.6, 11.5), 0.71, np.zeros((5, 2), np.float32), emb),
        _Face((689.5, 2.5, 833.2, 96.0), 0.93, np.zeros((5, 2), np.float32), emb * 2),
    ]
    out = faces_json(faces)
    body = dumps({"facial-recognition": out})
    expected = orjson.dumps(
        {"facial-recognition": [
            {"boundingBox": {"x1": np.float32(690.0), "y1": np.float32(2.0), "x2": np.float32(833.0), "y2": np.float32(96.0)},
             "embedding": orjson.dumps(emb * 2, option=orjson.OPT_SERIALIZE_NUMPY).decode(), "score": np.float32(0.93)},
            {"boundingBox": {"x1": np.float32(10.0), "y1": np.float32(-89.0), "x2": np.float32(649.0), "y2": np.float32(12.0)},
             "embedding": orjson.dumps(emb, option=orjson.OPT_SERIALIZE_NUMPY).decode(), "score": np.float32(0.71)},
        ]},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    assert body == expected
    assert b'"x1":690.0,' in body and b'"score":0.93}' in body


@dataclass(frozen=True)
class _Line:  # the shape of ocr.OcrLine as the contract defines it
    text: str
    box: np.ndarray
    box_score: float
    text_score: float


def test_ocr_json_normalises_filters_strictly_and_keeps_scores_aligned():
    quad = np.array([[99, 380], [322, 380], [322, 451], [99, 451]], np.float32)
    lines = [
        _Line("Hi42", quad, 0.48076746, 0.9450004),
        _Line("drop", quad + 10, 0.9, 0.8),  # not > 0.8
        _Line("keep", quad + 20, 0.7, 0.80001),
    ]
    out = ocr_json(lines, 1000, 700, 0.8)
    assert list(out) == ["box", "text", "boxScore", "textScore"]
    assert out["text"] == ["Hi42", "keep"]
    assert out["textScore"] == [0.945, 0.80001]
    assert [float(v) for v in out["boxScore"]] == [float(np.float32(0.48076746)), float(np.float32(0.7))]
    assert len(out["box"]) == 16
    expected_first = (quad / np.float32([1000, 700])).astype(np.float32).ravel()
    assert dumps(out["box"][:8]) == orjson.dumps(expected_first, option=orjson.OPT_SERIALIZE_NUMPY)
    assert dumps(out["box"][:2]) == b"[0.099,0.54285717]"


def test_ocr_empty_results_keep_both_official_key_orders():
    assert dumps(ocr_json([], 10, 10, 0.8)) == b'{"box":[],"boxScore":[],"text":[],"textScore":[]}'
    low = [_Line("x", np.zeros((4, 2), np.float32), 0.9, 0.5)]
    assert dumps(ocr_json(low, 10, 10, 0.8)) == b'{"box":[],"text":[],"boxScore":[],"textScore":[]}'


def test_response_puts_image_size_last():
    assert protocol.response_json({"clip": "[0.5]"}, (600, 800)) == b'{"clip":"[0.5]","imageHeight":800,"imageWidth":600}'
    assert protocol.response_json({}, (600, 800)) == b'{"imageHeight":800,"imageWidth":600}'
    assert protocol.response_json({}, None) == b"{}"
