#!/usr/bin/env python3
"""`search` at library scale: the vector index against the exact scan, on synthetic databases.

Writes a database of N clustered 512-d CLIP vectors (same schema and keys as `index` writes, one
photo row each, vectors written directly), then times the whole `hailo-immich search --text ... -k 5`
command (wall time and peak RSS of the process) with `--exact` and with the vector index, reports
the `query_ms` the command prints, recall@10 and top-1 agreement of the index against the exact
scan over many queries near the photos and far from all of them (random directions, like text
against image vectors), the index build time and what keeping it up to date costs an `index` run
that added a handful of photos and one that added 1% more.

The query text is encoded by the CLIP stand-in the tests use (the real tokenizer, a small random
text net: no CLIP weights are reachable offline); the stored vectors carry that model's id, so the
command runs exactly as on a real library.

    nice -n 10 python scripts/bench_vector_index.py --sizes 100000,1000000 [--workdir DIR] [--no-exact]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hailo_immich_cli.batch.search import Index  # noqa: E402
from hailo_immich_cli.batch.synthetic import clustered, far, near, write_clip_library  # noqa: E402
from hailo_immich_cli.batch.vectors import VectorIndex, sync_all  # noqa: E402

QUERY = "a dog on a beach"


def model_environment(workdir: Path) -> tuple[dict[str, str], str]:
    """The CLIP stand-in models (beside links to the real CPU models) and the model id their visual encoder stores under."""
    from hailo_immich_cli.models.recipes import RecipeBook
    from hailo_immich_cli.session import SessionManager
    from hailo_immich_cli.settings import Settings
    from hailo_immich_cli.testkit.clip_models import clip_stand_ins

    models = workdir / "models" / "models"
    models.mkdir(parents=True, exist_ok=True)
    real = Path(os.environ.get("HAILO_IMMICH_MODELS_DIR") or REPO / "models")
    for child in real.iterdir():
        if child.is_dir() and not (models / child.name).exists():
            (models / child.name).symlink_to(child.resolve())
    if not (models / "clip-vit-b32-openai-textual-cpu" / "tokenizer.json").exists():
        clip_stand_ins(models)
    env = {"HAILO_IMMICH_MODELS_DIR": str(models), "HAILO_IMMICH_BACKEND": "cpu"}
    settings = Settings.load(env=env)
    with SessionManager(settings, RecipeBook.load(settings.recipes_dir)) as session:
        model_id = session.model("clip-vit-b32-openai-visual-cpu").provenance.model_id
    return env, model_id


# A process's peak RSS survives exec and starts from its parent's at fork, and this script holds all
# the vectors: a small launcher process starts each `search`, so its peak is its own.
_LAUNCH = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, status, use = os.wait4(p.pid, 0); "
           "print(f'PEAK_RSS_KB {use.ru_maxrss} {os.waitstatus_to_exitcode(status)}', file=sys.stderr)")


def run_search(db: Path, env: dict[str, str], *extra: str) -> dict:
    """One `search` process: wall time, its own peak RSS (MiB) and its JSON output."""
    full = {**os.environ, **env, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "hailo_immich_cli", "search", str(db), "--text", QUERY, "-k", "5", "--json", "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], capture_output=True, text=True, env=full)
    wall = time.perf_counter() - t0  # includes the launcher's own start (~20 ms)
    last = proc.stderr.strip().splitlines()[-1].split()
    if last[0] != "PEAK_RSS_KB" or last[2] != "0":
        raise SystemExit(f"search failed: {proc.stderr}")
    return {"wall_s": wall, "rss_mb": int(last[1]) / 1024, "json": json.loads(proc.stdout)}


def recall(db: Path, model_id: str, vectors: np.ndarray, count: int) -> dict:
    """recall@10 and top-1 of the index against exact cosine over the written vectors (= `--exact`, without
    a full SQLite scan per query) for queries near the photos, top-1 for queries far from all of them, and
    the in-process median query time of each."""
    ann = Index(db)
    path = lambda i: f"/synthetic/{i // 1000:04d}/{i:07d}.jpg"  # noqa: E731 - the names write_clip_library gives
    out: dict = {}
    try:
        for kind, queries in (("near", near(vectors, count, seed=99)), ("far", far(count, vectors.shape[1], seed=98))):
            hits, top1, ms = [], [], []
            for q in queries:
                scores = np.concatenate([vectors[i:i + 131072] @ q for i in range(0, len(vectors), 131072)])
                best = np.argpartition(-scores, 10)[:10]
                want = [path(int(i)) for i in best[np.argsort(-scores[best])]]
                got = [h.path for h in ann.by_vector(q, model_id, 10)]
                ms.append(ann.query_ms)
                hits.append(len(set(want) & set(got)) / 10)
                top1.append(bool(got) and got[0] == want[0])
            out[kind] = {"recall10": round(float(np.mean(hits)), 4), "top1": round(float(np.mean(top1)), 4),
                         "query_ms_median": round(float(np.median(ms)), 2), "query_ms_max": round(float(np.max(ms)), 2)}
    finally:
        ann.close()
    return out


def upkeep(db: Path, model_id: str, n: int, added: int) -> dict:
    """What `index` spends on the vector index after writing `added` new photos (the sync at its end)."""
    extra, _ = clustered(added, seed=8 + added)
    conn = sqlite3.connect(db)
    first_free = n + 10_000_000 + conn.execute("SELECT max(id) FROM files").fetchone()[0]  # unique on every run
    conn.close()
    write_clip_library(db, extra, model_id=model_id, start=first_free)
    t0 = time.perf_counter()
    done = sync_all(db)
    seconds = time.perf_counter() - t0
    res = next((r for r in done if r["kind"] == "clip"), {})
    return {"added": added, "sync_s": round(seconds, 3), "merged": res.get("merged"), "rebuilt": res.get("rebuilt")}


def bench(n: int, workdir: Path, env: dict[str, str], model_id: str, queries: int, repeats: int, exact_runs: bool) -> dict:
    db = workdir / f"synthetic-{n}.db"
    vectors, _ = clustered(n, seed=7)
    if not db.exists():
        t0 = time.perf_counter()
        write_clip_library(db, vectors, model_id=model_id,
                           progress=lambda d, t: print(f"  writing {d}/{t}", file=sys.stderr, end="\r"))
        print(f"  wrote {n} rows in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    exact = [run_search(db, env, "--exact") for _ in range(repeats if exact_runs else 0)]
    print(f"  exact search: {[round(r['wall_s'], 2) for r in exact]} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    built = sync_all(db)
    build_s = time.perf_counter() - t0
    print(f"  index built in {build_s:.1f} s: {built}", file=sys.stderr, flush=True)
    indexed = [run_search(db, env) for _ in range(repeats)]
    print(f"  indexed search: {[round(r['wall_s'], 2) for r in indexed]} s", file=sys.stderr, flush=True)
    quality = recall(db, model_id, vectors, queries)
    print(f"  recall: {quality}", file=sys.stderr, flush=True)
    del vectors
    # keeping it up to date: a handful of new photos, twice (the first after an index made by an older
    # version reads every key once), then 1% more
    updates = [upkeep(db, model_id, n, added) for added in (10, 10, max(1, n // 100))]
    print(f"  upkeep: {updates}", file=sys.stderr, flush=True)
    meta = VectorIndex(db, "clip", model_id).meta() or {}
    same = all(e["json"]["results"][0]["path"] == i["json"]["results"][0]["path"] for e, i in zip(exact, indexed))
    return {
        "vectors": n, "exact_wall_s": [round(r["wall_s"], 2) for r in exact],
        "exact_rss_mb": round(max(r["rss_mb"] for r in exact)) if exact else None,
        "exact_query_ms": round(float(np.median([r["json"]["query_ms"] for r in exact])), 1) if exact else None,
        "index_build_s": round(build_s, 1), "index_built": built,
        "index_wall_s": [round(r["wall_s"], 2) for r in indexed], "index_rss_mb": round(max(r["rss_mb"] for r in indexed)),
        "index_query_ms": round(float(np.median([r["json"]["query_ms"] for r in indexed])), 1),
        "quality": quality, "same_top1_in_cli": same if exact else None, "upkeep": updates,
        "index_file_mb": round(VectorIndex(db, "clip", model_id).path.stat().st_size / 2**20, 1), "library": meta.get("library"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--queries", type=int, default=100, help="queries for recall@10 against the exact scan")
    ap.add_argument("--repeats", type=int, default=3, help="timed `search` processes per method")
    ap.add_argument("--no-exact", action="store_true", help="skip the `--exact` processes (a minute or more each at 1M)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="bench-vectors-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env, model_id = model_environment(workdir)
    results = []
    for n in (int(s) for s in a.sizes.split(",")):
        print(f"{n} vectors ...", file=sys.stderr)
        results.append(bench(n, workdir, env, model_id, a.queries, a.repeats, not a.no_exact))
        if a.json:
            print(json.dumps(results[-1]), flush=True)
    if a.json:
        return
    print("| vectors | exact `search` wall s | exact peak RSS MB | exact query_ms | index build s | index `search` wall s |"
          " index peak RSS MB | index query_ms | recall@10 near | top-1 near | top-1 far | sync s after +10 / +10 / +1% |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        walls = lambda xs: f"{min(xs)}-{max(xs)}" if xs else "not run"  # noqa: E731
        q = r["quality"]
        print(f"| {r['vectors']:,} | {walls(r['exact_wall_s'])} | {r['exact_rss_mb']} | {r['exact_query_ms']} |"
              f" {r['index_build_s']} | {walls(r['index_wall_s'])} | {r['index_rss_mb']} | {r['index_query_ms']} |"
              f" {q['near']['recall10']} | {q['near']['top1']} | {q['far']['top1']} |"
              f" {' / '.join(str(u['sync_s']) for u in r['upkeep'])} |")

if __name__ == "__main__":
    main()
