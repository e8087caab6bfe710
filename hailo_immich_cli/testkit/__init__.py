"""Shared by the tests and the benchmark scripts: Immich-layout model caches, ONNX stand-ins with
real exports' signatures, sample photos and text images, and Immich's /predict request encoding.

It ships with the package so `scripts/` never import from `tests/`; nothing in the CLI or the
server imports it.
"""
