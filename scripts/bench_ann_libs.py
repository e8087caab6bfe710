#!/usr/bin/env python3
"""Compare approximate-nearest-neighbour libraries on synthetic clustered 512-d unit vectors.

Used to choose the vector index library (docs/search.md has the table). Each library runs in its
own subprocess so its peak memory is its own. Libraries that are not installed are reported as
such; install the candidates into a scratch folder and put it on PYTHONPATH to compare them:

    pip install --target /tmp/ann usearch faiss-cpu hnswlib
    PYTHONPATH=/tmp/ann:. nice -n 10 python scripts/bench_ann_libs.py --n 100000 --threads 1

Every query's recall@10 is measured against an exact NumPy scan of the same vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


LATENT = 64  # CLIP image vectors vary along a few dozen directions, not all 512


def _space(dim: int, clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((LATENT, dim)).astype(np.float32) / np.sqrt(LATENT)
    centres = rng.standard_normal((clusters, LATENT)).astype(np.float32)
    return basis, centres


def clustered(n: int, dim: int, seed: int, clusters: int | None = None) -> np.ndarray:
    """Unit vectors in clumps (trips, pets, faces) along a low-dimensional subspace, plus a little noise."""
    clusters = clusters or max(1, n // 200)
    basis, centres = _space(dim, clusters, seed)
    rng = np.random.default_rng(seed + 1)
    out = np.empty((n, dim), np.float32)
    step = 65536
    for i in range(0, n, step):
        m = min(step, n - i)
        z = centres[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal((m, LATENT)).astype(np.float32)
        out[i:i + m] = z @ basis + 0.05 * rng.standard_normal((m, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def queries(data: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Queries near the data but not in it (a text or image query lands between photos)."""
    rng = np.random.default_rng(seed)
    q = data[rng.integers(0, len(data), count)] + 0.03 * rng.standard_normal((count, data.shape[1])).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top(data: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(q), k), np.int64)
    for i in range(0, len(q), 64):
        s = q[i:i + 64] @ data.T
        part = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1)
        out[i:i + 64] = np.take_along_axis(part, order, 1)
    return out


# ---- one library per subprocess --------------------------------------------------------------
def run_usearch(data, q, k, threads, workdir, dtype):
    from usearch.index import Index

    t0 = time.perf_counter()
    index = Index(ndim=data.shape[1], metric="cos", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
    index.add(np.arange(len(data), dtype=np.uint64), data, threads=threads)
    build = time.perf_counter() - t0
    path = Path(workdir) / "usearch.index"
    index.save(str(path))
    del index
    t0 = time.perf_counter()
    view = Index.restore(str(path), view=True)
    view.expansion_search = 64
    open_s = time.perf_counter() - t0
    found, times = _timed(lambda v: view.search(v, fetch(k)).keys.astype(np.int64), q)
    return {"build_s": build, "open_s": open_s, "found": found, "times": times, "file_bytes": path.stat().st_size,
            "version": __import__("usearch").__version__, "config": f"HNSW M=16 efC=128 efS=64 {dtype}, mmap view"}


def _reopen(workdir, name: str, index, save, load):
    """Save, drop, and time opening again: what a `search` process pays before its first query."""
    path = Path(workdir) / name
    save(index, str(path))
    del index
    t0 = time.perf_counter()
    index = load(str(path))
    return path, index, time.perf_counter() - t0


def run_faiss_hnsw(data, q, k, threads, workdir):
    import faiss

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(data.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.add(data)
    build = time.perf_counter() - t0
    path, index, open_s = _reopen(workdir, "faiss_hnsw.index", index, faiss.write_index, faiss.read_index)
    index.hnsw.efSearch = 64
    found, times = _timed(lambda v: index.search(v[None], fetch(k))[1][0], q)
    return {"build_s": build, "open_s": open_s, "found": found, "times": times, "file_bytes": path.stat().st_size,
            "version": faiss.__version__, "config": "HNSWFlat M=16 efC=128 efS=64 f32, read into RAM"}


def run_faiss_ivf(data, q, k, threads, workdir):
    import faiss

    faiss.omp_set_num_threads(threads)
    nlist = int(4 * np.sqrt(len(data)))
    t0 = time.perf_counter()
    quant = faiss.IndexFlatIP(data.shape[1])
    index = faiss.IndexIVFFlat(quant, data.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(0)
    index.train(data[rng.choice(len(data), min(len(data), 40 * nlist), replace=False)])
    index.add(data)
    build = time.perf_counter() - t0
    path, index, open_s = _reopen(workdir, "faiss_ivf.index", index, faiss.write_index,
                                  lambda p: faiss.read_index(p, faiss.IO_FLAG_MMAP))
    index.nprobe = 32
    found, times = _timed(lambda v: index.search(v[None], fetch(k))[1][0], q)
    return {"build_s": build, "open_s": open_s, "found": found, "times": times, "file_bytes": path.stat().st_size,
            "version": faiss.__version__, "config": f"IVFFlat nlist={nlist} nprobe=32 f32, mmap"}


def run_hnswlib(data, q, k, threads, workdir):
    import hnswlib

    t0 = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=data.shape[1])
    index.init_index(max_elements=len(data), M=16, ef_construction=128, allow_replace_deleted=True)
    index.add_items(data, np.arange(len(data)), num_threads=threads)
    build = time.perf_counter() - t0
    path = Path(workdir) / "hnswlib.index"
    index.save_index(str(path))
    del index
    t0 = time.perf_counter()
    index = hnswlib.Index(space="cosine", dim=data.shape[1])
    index.load_index(str(path), max_elements=len(data))
    index.set_ef(64)
    open_s = time.perf_counter() - t0
    found, times = _timed(lambda v: index.knn_query(v, fetch(k), num_threads=1)[0][0].astype(np.int64), q)
    return {"build_s": build, "open_s": open_s, "found": found, "times": times, "file_bytes": path.stat().st_size,
            "version": getattr(hnswlib, "__version__", "0.8.0"), "config": "HNSW M=16 efC=128 ef=64 f32, read into RAM"}


def run_sqlite_vec(data, q, k, threads, workdir):
    import sqlite3

    import sqlite_vec

    conn = sqlite3.connect(str(Path(workdir) / "vec.db"))
    conn.enable_load_extension(True)  # raises where Python's sqlite3 was built without extension loading
    sqlite_vec.load(conn)
    t0 = time.perf_counter()
    conn.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{data.shape[1]}] distance_metric=cosine)")
    conn.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i, data[i].tobytes()) for i in range(len(data))))
    conn.commit()
    build = time.perf_counter() - t0
    sql = "SELECT rowid FROM v WHERE embedding MATCH ? AND k = ?"
    found, times = _timed(lambda v: np.array([r[0] for r in conn.execute(sql, (v.tobytes(), fetch(k)))]), q)
    return {"build_s": build, "open_s": 0.0, "found": found, "times": times, "file_bytes": 0,
            "version": sqlite_vec.__version__, "config": "vec0 brute force f32"}


def run_exact(data, q, k, threads, workdir):
    t0 = time.perf_counter()
    found, times = _timed(lambda v: exact_top(data, v[None], fetch(k))[0], q)
    return {"build_s": 0.0, "open_s": time.perf_counter() - t0 - sum(times), "found": found, "times": times,
            "file_bytes": data.nbytes, "version": np.__version__, "config": "NumPy matrix product, in RAM"}


RUNNERS = {
    "usearch-f16": lambda *a: run_usearch(*a, dtype="f16"),
    "usearch-i8": lambda *a: run_usearch(*a, dtype="i8"),
    "faiss-hnsw": run_faiss_hnsw,
    "faiss-ivf": run_faiss_ivf,
    "hnswlib": run_hnswlib,
    "sqlite-vec": run_sqlite_vec,
    "exact": run_exact,
}


def fetch(k: int) -> int:
    """Candidates asked of the index for a top-k answer (`search` over-fetches the same way)."""
    return 4 * k + 16


def _timed(fn, q):
    found, times = [], []
    for v in q:
        t0 = time.perf_counter()
        found.append(np.asarray(fn(v), dtype=np.int64))
        times.append(time.perf_counter() - t0)
    return found, times


def child(name: str, n: int, dim: int, nq: int, k: int, threads: int) -> None:
    data = clustered(n, dim, seed=1)
    q = queries(data, nq, seed=2)
    truth = exact_top(data, q, k)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory(prefix="ann-") as workdir:
        try:
            res = RUNNERS[name](data, q, k, threads, workdir)
        except Exception as exc:  # not installed, or cannot load: reported, not fatal
            print(json.dumps({"name": name, "error": f"{type(exc).__name__}: {exc}"}))
            return
    fetched = [np.asarray(f, dtype=np.int64) for f in res["found"]]
    # Rerank the over-fetched candidates with the exact float32 vectors (what `search` does with SQLite's copies).
    res["found"] = [f[np.argsort(-(data[f[f >= 0]] @ v))][:k] if len(f) else f for f, v in zip(fetched, q)]
    recall = float(np.mean([len(set(f[:k].tolist()) & set(t.tolist())) / k for f, t in zip(res["found"], truth)]))
    top1 = float(np.mean([len(f) > 0 and f[0] == t[0] for f, t in zip(res["found"], truth)]))
    times = np.asarray(res["times"]) * 1000
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "name": name, "version": res["version"], "config": res["config"], "n": n, "build_s": round(res["build_s"], 2),
        "open_ms": round(res["open_s"] * 1000, 1), "query_p50_ms": round(float(np.percentile(times, 50)), 3),
        "query_p95_ms": round(float(np.percentile(times, 95)), 3), "recall10": round(recall, 4), "top1": round(top1, 4),
        "file_mb": round(res["file_bytes"] / 2**20, 1), "peak_rss_mb": round(peak / 1024, 1),
        "rss_over_data_mb": round((peak - base_rss) / 1024, 1),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--libs", default=",".join(RUNNERS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child, a.n, a.dim, a.queries, a.k, a.threads)
        return
    print("| library | version | config | n | build s | open ms | query p50 ms | p95 ms | recall@10 | top-1 | file MB | RSS over data MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in a.libs.split(","):
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--n", str(a.n), "--dim", str(a.dim),
                               "--queries", str(a.queries), "--k", str(a.k), "--threads", str(a.threads)],
                              capture_output=True, text=True, env=os.environ)
        line = (proc.stdout.strip().splitlines() or ["{}"])[-1]
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            r = {"name": name, "error": (proc.stderr.strip().splitlines() or ["crashed"])[-1]}
        if "error" in r:
            print(f"| {name} | | {r['error']} | {a.n} | | | | | | | | |", flush=True)
            continue
        print(f"| {name} | {r['version']} | {r['config']} | {r['n']} | {r['build_s']} | {r['open_ms']} | {r['query_p50_ms']} | "
              f"{r['query_p95_ms']} | {r['recall10']} | {r['top1']} | {r['file_mb']} | {r['rss_over_data_mb']} |", flush=True)


if __name__ == "__main__":
    main()
