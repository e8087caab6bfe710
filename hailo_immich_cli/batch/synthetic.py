"""Synthetic libraries for benchmarks and tests: clustered unit vectors written straight into an index DB.

Real CLIP image vectors vary along a few dozen directions and come in clumps (a trip, a pet, a
face), which is what makes nearest-neighbour graphs work on them; isotropic noise in 512-d would
make every method look bad and say nothing about photo libraries. Rows go through the same schema
and keys as `index` writes (same tables, `vkey`, triggers), with made-up paths and hashes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from hailo_immich_cli.batch.store import ModelInfo, Store, vector_blob
from hailo_immich_cli.batch.vector_keys import clip_key, face_key
from hailo_immich_cli.clip.task import VISUAL
from hailo_immich_cli.faces.task import RECOGNITION

LATENT = 64


def clustered(n: int, dim: int = 512, seed: int = 1, clusters: int | None = None, spread: float = 0.5,
              noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """`n` unit vectors in clumps along a low-dimensional subspace; returns (vectors, cluster of each)."""
    clusters = clusters or max(1, n // 200)
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)
    centres = rng.standard_normal((clusters, LATENT)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 65536):
        m = min(65536, n - i)
        z = centres[labels[i:i + m]] + spread * rng.standard_normal((m, LATENT)).astype(np.float32)
        out[i:i + m] = z @ basis + noise * rng.standard_normal((m, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, labels


def near(vectors: np.ndarray, count: int, seed: int, jitter: float = 0.03) -> np.ndarray:
    """Queries near the data but not in it (a text or image query lands between photos)."""
    rng = np.random.default_rng(seed)
    q = vectors[rng.integers(0, len(vectors), count)] + jitter * rng.standard_normal((count, vectors.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def far(count: int, dim: int = 512, seed: int = 1) -> np.ndarray:
    """Queries far from every clump (random directions): like a text query against image vectors, the hard case
    for a nearest-neighbour graph, because every stored vector is about as far away as every other."""
    q = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def fake_hash(i: int, salt: str = "") -> str:
    import xxhash

    return xxhash.xxh3_128_hexdigest(f"{salt}synthetic-{i}".encode())


def write_clip_library(db_path: Path | str, vectors: np.ndarray, model_id: str = "clip-vit-b32-openai-visual-cpu@synthetic",
                       start: int = 0, root: str = "/synthetic", batch: int = 20000,
                       progress: Callable[[int, int], None] | None = None) -> list[str]:
    """One photo row (ok, not deleted) and one CLIP row per vector; returns the content hashes."""
    store = Store(db_path)
    store.record_model(ModelInfo(model_id, VISUAL, model_id.split("@")[0], "cpu", dim=int(vectors.shape[1])))
    hashes = [fake_hash(start + i) for i in range(len(vectors))]
    now = time.time()
    try:
        for i in range(0, len(vectors), batch):
            with store.transaction():
                store.conn.executemany(
                    "INSERT INTO files (path, size, mtime_ns, hash, width, height, orientation, format, status, first_seen,"
                    " last_seen, deleted) VALUES (?, 1000, 0, ?, 640, 480, 1, 'JPEG', 'ok', ?, ?, 0)",
                    ((f"{root}/{(start + j) // 1000:04d}/{start + j:07d}.jpg", hashes[j], now, now)
                     for j in range(i, min(i + batch, len(vectors)))),
                )
                store.conn.executemany(
                    "INSERT INTO clip (hash, model_id, backend, dim, embedding, vkey) VALUES (?, ?, 'cpu', ?, ?, ?)",
                    ((hashes[j], model_id, int(vectors.shape[1]), vector_blob(vectors[j]), clip_key(hashes[j]))
                     for j in range(i, min(i + batch, len(vectors)))),
                )
            if progress:
                progress(min(i + batch, len(vectors)), len(vectors))
    finally:
        store.close()
    return hashes


def write_faces(db_path: Path | str, embeddings: np.ndarray, recognizer: str, detector: str = "synthetic-detector@0",
                per_photo: int = 1, salt: str = "faces") -> list[str]:
    """Photos holding `per_photo` faces each, with the given embeddings in order; returns the content hashes."""
    store = Store(db_path)
    model_id = f"{detector}+{recognizer}"
    store.record_model(ModelInfo(recognizer, RECOGNITION, recognizer.split("@")[0], "cpu", dim=int(embeddings.shape[1])))
    now = time.time()
    hashes = []
    try:
        with store.transaction():
            for p in range(0, len(embeddings), per_photo):
                h = fake_hash(p, salt)
                hashes.append(h)
                store.conn.execute(
                    "INSERT INTO files (path, size, mtime_ns, hash, width, height, orientation, format, status, first_seen,"
                    " last_seen, deleted) VALUES (?, 1000, 0, ?, 640, 480, 1, 'JPEG', 'ok', ?, ?, 0)",
                    (f"/synthetic/{salt}/{p:07d}.jpg", h, now, now),
                )
                for idx, emb in enumerate(embeddings[p:p + per_photo]):
                    store.conn.execute(
                        "INSERT INTO faces (hash, model_id, detector, recognizer, backend, idx, x1, y1, x2, y2, score,"
                        " embedding, vkey) VALUES (?, ?, ?, ?, 'cpu', ?, ?, 10, ?, 120, 0.9, ?, ?)",
                        (h, model_id, detector, recognizer, idx, 10.0 + 120 * idx, 110.0 + 120 * idx, vector_blob(emb),
                         face_key(h, model_id, idx)),
                    )
    finally:
        store.close()
    return hashes
