"""`hailo-immich serve`: a drop-in replacement for Immich's machine-learning HTTP service."""
