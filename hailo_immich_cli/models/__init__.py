"""Model management: recipes and their schema, where model files are, Immich caches, fetching, HEF
metadata, and which recipe serves a model name. Nothing here runs a model."""
