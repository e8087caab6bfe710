"""hef.py against real HEF files (MANIFEST.json from an independent reader) and broken variants."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from hailo_immich_cli.models.hef import HefFormatError, read_hef
from hailo_immich_cli.testkit.hef_builder import Layer, build_hef, container, f_bytes, f_int, f_str, hef_proto

pytestmark = pytest.mark.shared


def _manifest(hef_fixtures: Path) -> list[dict]:
    return json.loads((hef_fixtures / "MANIFEST.json").read_text())["files"]


def assert_same(actual, expected, where: str = "") -> None:
    """Equal structure; floats equal to a relative 1e-6 (float32 values in the file)."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=1e-12), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), f"{where}: keys differ: {set(actual) ^ set(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), f"{where}: {len(actual)} items != {len(expected)}: {actual}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_every_fixture_matches_the_manifest_summary(hef_fixtures: Path) -> None:
    entries = _manifest(hef_fixtures)
    assert len(entries) >= 7
    for entry in entries:
        info = read_hef(hef_fixtures / entry["file"])
        assert_same(info.summary(), entry["summary"], entry["file"])
        header = entry["expected"]["header"]
        assert info.header.hash_computed == header["hash_computed"] == header["hash_expected"]
        assert info.size == entry["size"]


def test_full_layer_details_match_the_manifest(hef_fixtures: Path) -> None:
    """limvals and original names too, for every boundary layer of every fixture."""
    for entry in _manifest(hef_fixtures):
        info = read_hef(hef_fixtures / entry["file"])
        for ng, expected_ng in zip(info.network_groups, entry["expected"]["network_groups"]):
            assert math.isclose(ng.latency_s, expected_ng["latency_s"], rel_tol=1e-9)
            assert list(ng.sorted_outputs_order) == expected_ng["sorted_outputs_order"]
            assert dict(ng.non_boundary_edge_layers) == expected_ng["non_boundary_edge_layers"]
            expected_layers = {l["name"]: l for l in expected_ng["inputs"] + expected_ng["outputs"] + expected_ng["core_outputs"]}
            for layer in ng.inputs + ng.outputs + ng.core_outputs:
                exp = expected_layers[layer.name]
                assert math.isclose(layer.limvals_min, exp["quant"]["limvals_min"], rel_tol=1e-6, abs_tol=1e-12), layer.name
                assert math.isclose(layer.limvals_max, exp["quant"]["limvals_max"], rel_tol=1e-6, abs_tol=1e-12), layer.name
                assert list(layer.original_names) == exp["original_names"], layer.name
                assert layer.per_feature is None  # no fixture has OUTPUT_SCALE_PER_FEATURE


def test_arch_compatibility_follows_hailort(hef_fixtures: Path) -> None:
    arcface = read_hef(hef_fixtures / "arcface_mobilefacenet.hef")
    assert arcface.runs_on("HAILO8") and not arcface.runs_on("HAILO8L")
    h8l = read_hef(hef_fixtures / "model_3x640x640_h8l.hef")
    assert h8l.runs_on("HAILO8") and h8l.runs_on("HAILO8L")
    scrfd = read_hef(hef_fixtures / "scrfd_2.5g_h15.hef")
    assert not scrfd.runs_on("HAILO8") and not scrfd.runs_on("HAILO8L")
    mnist = read_hef(hef_fixtures / "mnist.hef")
    assert not mnist.hailort_4_23_loadable and "outdated" in mnist.hailort_4_23_reasons[0]


# ---- broken files: always a HefFormatError with a clear message, never another exception ------


def _good(tmp_path: Path) -> Path:
    return build_hef(tmp_path / "good.hef", "net", [Layer("net/in", (4, 4, 3))], [Layer("net/out", (8,), qp_scale=0.1, qp_zp=3)])


def test_builder_output_is_read_back(tmp_path: Path) -> None:
    info = read_hef(_good(tmp_path))
    ng = info.network_groups[0]
    assert (ng.name, ng.inputs[0].shape, ng.outputs[0].shape, ng.outputs[0].host_order) == ("net", (4, 4, 3), (8,), "NC")
    assert math.isclose(ng.outputs[0].qp_scale, 0.1, rel_tol=1e-6) and ng.outputs[0].qp_zp == 3.0


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("empty", lambda good: b"", "not a HEF"),
        ("text", lambda good: b"hello, this is not a model\n" * 4, "not a HEF"),
        ("onnx-like", lambda good: b"\x08\x07\x12\x07pytorch" + bytes(64), "not a HEF"),
        ("truncated header", lambda good: good[:20], "truncated"),
        ("truncated body", lambda good: good[:-10], "truncated"),
        ("trailing data", lambda good: good + b"\0" * 5, "trailing"),
        ("flipped byte", lambda good: good[:60] + bytes([good[60] ^ 0xFF]) + good[61:], "corrupted"),
        ("unknown header version", lambda good: good[:4] + struct.pack(">I", 9) + good[8:], "version 9"),
        ("garbage protobuf, valid hash", lambda good: container(b"\xff" * 40), "malformed"),
        ("wire type 3", lambda good: container(b"\x0b\x0c"), "malformed"),
        ("overlong length", lambda good: container(b"\x0a\x7f\x00"), "malformed"),
        ("no network group", lambda good: container(f_bytes(1, f_int(1, 1) + f_str(3, "3.31.0"))), "no network group"),
        ("no header message", lambda good: container(f_bytes(2, b"")), "malformed"),
        ("unnamed network group", lambda good: container(f_bytes(1, f_int(1, 1)) + f_bytes(2, b"")), "malformed"),
    ],
)
def test_broken_files_give_hef_format_error(tmp_path: Path, name: str, make, words: str) -> None:
    good = _good(tmp_path).read_bytes()
    path = tmp_path / "broken.hef"
    path.write_bytes(make(good))
    with pytest.raises(HefFormatError) as err:
        read_hef(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_every_truncation_of_a_real_proto_is_refused_cleanly(tmp_path: Path) -> None:
    """Cut the protobuf anywhere (re-hashed, so only the parser can notice): HefFormatError or a valid read."""
    proto = hef_proto("net", [Layer("net/in", (4, 4, 3))], [Layer("net/out", (8,), qp_scale=0.1)])
    path = tmp_path / "cut.hef"
    refused, read = 0, 0
    for cut in range(0, len(proto), 3):
        path.write_bytes(container(proto[:cut]))
        try:
            info = read_hef(path)  # anything but HefFormatError fails the test
        except HefFormatError as exc:
            assert str(path) in str(exc)
            refused += 1
        else:
            assert info.header.proto_size == cut and all(ng.name in ("", "net") for ng in info.network_groups)
            read += 1
    assert refused > read  # most cuts land inside a field
    path.write_bytes(container(proto))
    assert [ng.name for ng in read_hef(path).network_groups] == ["net"]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(HefFormatError, match="cannot read"):
        read_hef(tmp_path / "absent.hef")
    with pytest.raises(HefFormatError):
        read_hef(tmp_path)


def test_per_feature_output_quantisation(tmp_path: Path) -> None:
    """With OUTPUT_SCALE_PER_FEATURE (25) the per-feature vectors are the truth for outputs."""
    scales, zps = [0.1, 0.2, 0.3], [1.0, 2.0, 3.0]
    path = build_hef(tmp_path / "pf.hef", "pf", [Layer("pf/in", (2, 2, 3))],
                     [Layer("pf/out", (3,), qp_scale=0.5, qp_zp=9, per_feature=(scales, zps))], extensions=(0, 3, 26, 12, 25))
    out = read_hef(path).network_groups[0].outputs[0]
    assert out.per_feature == (tuple(scales), tuple(zps))
    without = build_hef(tmp_path / "plain.hef", "pf", [Layer("pf/in", (2, 2, 3))],
                        [Layer("pf/out", (3,), qp_scale=0.5, qp_zp=9, per_feature=(scales, zps))])
    assert read_hef(without).network_groups[0].outputs[0].per_feature is None  # vectors ignored without the extension
