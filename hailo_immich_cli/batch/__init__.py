"""Batch mode: scan folders, decode, run pipelines, store results in SQLite, search them."""
