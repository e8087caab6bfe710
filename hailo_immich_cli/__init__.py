"""hailo-immich: Immich's machine-learning jobs on a Hailo-8/8L NPU, with an ONNX Runtime CPU backend."""

__version__ = "0.1.0"
