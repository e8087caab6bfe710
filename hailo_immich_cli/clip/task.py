"""CLIP as a task: Immich's `clip` (visual for photos, textual for search queries), served, indexed and benchmarked.

The pipeline is imported on first use, so the registry stays cheap to load.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hailo_immich_cli.clip.recipe_keys import RECIPE_KEYS
from hailo_immich_cli.server.jsonfmt import embedding_from_json, float32_array
from hailo_immich_cli.tasks import BenchJob, Task, VectorTable

VISUAL, TEXTUAL = "clip-visual", "clip-textual"
IMMICH_DEFAULT_MODEL = "ViT-B-32__openai"


def clip_json(vector: np.ndarray) -> str:
    """A CLIP embedding as Immich stores it: a JSON string holding a float32 array."""
    return float32_array(vector)


def _visual_entries(name: str) -> dict[str, Any]:
    return {"clip": {"visual": {"modelName": name}}}


def text_entries(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """A search query as Immich's server asks for it (`options` as it sends them)."""
    return {"clip": {"textual": {"modelName": name, "options": dict(options)}}}


class ClipLines:
    """`embed`'s plain output: one tab-separated line per vector (label, model, backend, size, first values)."""

    def add(self, label: str, result: tuple[np.ndarray, Any]) -> None:
        import typer

        vec, prov = result
        head = ", ".join(f"{x:.5f}" for x in vec[:4])
        typer.echo(f"{label}\t{prov.model_id}\t{prov.backend}\t{vec.shape[0]}-d\t[{head}, ...]")

    def close(self) -> None:
        pass


class ClipTask(Task):
    def input_scale(self, recipe, width: int, height: int, options: Mapping[str, Any]) -> float:
        if recipe.task != VISUAL:
            return 0.0
        size = recipe.preprocess.get("size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size) / min(width, height)

    def serve(self, session, plan, image, text: str | None, outcome, host_path: str = "exact") -> str:
        from hailo_immich_cli.clip import pipeline

        visual = plan.get(self.immich_task, "visual")
        if image is not None and visual is not None:
            emb = pipeline.encode_images(session, [image.for_pillow_steps(host_path)], model=visual.recipe_id, host_path=host_path)
        else:
            textual = plan.get(self.immich_task, "textual")
            assert textual is not None and text is not None  # protocol.check_inputs guarantees it
            emb = pipeline.encode_texts(session, [text], model=textual.recipe_id)
        outcome.backends[emb.provenance.recipe_id] = emb.provenance.backend
        return clip_json(emb.vectors[0])

    def choose_for_index(self, session, name: str | None, warn: Callable[[str], None]) -> dict[str, Any]:
        return {VISUAL: session.resolve(VISUAL, name)}

    def run_for_index(self, session, recipes: Mapping[str, Any], images: Sequence[np.ndarray]) -> list[tuple[Any, str]]:
        from hailo_immich_cli.clip import pipeline

        emb = pipeline.encode_images(session, list(images), model=recipes[VISUAL].id)
        return [(vector, emb.provenance.backend) for vector in emb.vectors]

    def index_rows(self, content: str, out) -> tuple[int, list[tuple[str, list[tuple]]]]:
        """The image's vector, replacing the same model's earlier one."""
        from hailo_immich_cli.batch.store import vector_blob
        from hailo_immich_cli.batch.vector_keys import clip_key

        vec = np.asarray(out.payload, dtype=np.float32).reshape(-1)
        sql = "INSERT OR REPLACE INTO clip (hash, model_id, backend, dim, embedding, vkey) VALUES (?, ?, ?, ?, ?, ?)"
        return 1, [(sql, [(content, out.model_id, out.backend, int(vec.shape[0]), vector_blob(vec), clip_key(content))])]

    def remote_entries(self, name: str) -> dict[str, Any]:
        return _visual_entries(name)

    def parse_remote(self, body: Mapping[str, Any], provenance) -> np.ndarray:
        return embedding_from_json(body[self.immich_task])

    def cli_record(self, label: str, result: tuple[np.ndarray, Any], kind: str = "path") -> dict[str, Any]:
        """`embed --jsonl`'s record of one vector; `kind` says whether `label` is a file or a text."""
        vec, prov = result
        return {kind: label, "model_id": prov.model_id, "backend": prov.backend, "dim": int(vec.shape[0]),
                "embedding": [float(x) for x in vec]}

    def cli_table(self, no_color: bool) -> ClipLines:
        return ClipLines()

    def path_agreement(self, exact: str, fast: str) -> dict[str, Any]:
        """The cosine of the two embeddings."""
        import json

        a, b = (np.asarray(json.loads(x), np.float64) for x in (exact, fast))
        return {"cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))}

    def cache_recipe(self, model, data: dict[str, Any]) -> None:
        """An image tower keeps the template's input names; a text tower's are read from the export
        (M-CLIP text towers take input_ids + attention_mask). The folder's configs and its other tower."""
        from hailo_immich_cli.clip.immich_config import apply_folder_config, pair_folder

        if model.type != "visual":
            super().cache_recipe(model, data)
        apply_folder_config(model, data)
        pair_folder(model, data)

    def bench_work(self, job: BenchJob, session, stages: Mapping[str, Any], batch: int,
                   next_image: Callable[[], np.ndarray], next_texts: Callable[[int], list[str]], found: list[int],
                   host_path: str = "exact") -> Callable[[], int]:
        from hailo_immich_cli.clip.pipeline import encode_images, encode_texts

        if job.text:
            rid = stages[TEXTUAL].id

            def text_work() -> int:
                encode_texts(session, next_texts(batch), model=rid)
                return batch

            return text_work
        rid = stages[VISUAL].id

        def image_work() -> int:
            encode_images(session, [next_image() for _ in range(batch)], model=rid, host_path=host_path)
            return batch

        return image_work


TASK = ClipTask(
    name="clip",
    immich_task="clip",
    steps={"visual": VISUAL, "textual": TEXTUAL},
    indexed=(VISUAL,),
    recipe_keys=RECIPE_KEYS,
    immich_enum="CLIP",
    immich_default_model=IMMICH_DEFAULT_MODEL,
    embeddings=(VISUAL, TEXTUAL),
    text_types=("textual",),
    pillow_inputs=(VISUAL,),
    batched=True,
    stored_tables=("clip",),
    cache_templates={"visual": "clip-vit-b32-openai-visual-cpu", "textual": "clip-vit-b32-openai-textual-cpu"},
    cache_files={
        "visual": (("model", "model.onnx", "visual/model.onnx"),
                   ("preprocess_cfg", "preprocess_cfg.json", "visual/preprocess_cfg.json"),
                   ("config", "config.json", "config.json")),
        "textual": (("model", "model.onnx", "textual/model.onnx"),
                    ("tokenizer", "tokenizer.json", "textual/tokenizer.json"),
                    ("tokenizer_config", "tokenizer_config.json", "textual/tokenizer_config.json"),
                    ("config", "config.json", "config.json")),
    },
    vectors=VectorTable("clip", "model_id", "v.hash", per="photo"),
    bench_jobs=(
        BenchJob("clip", (VISUAL,), VISUAL, job_label="Smart Search", url_default_model=IMMICH_DEFAULT_MODEL,
                 url_entries=_visual_entries, url_default=True),
        BenchJob("clip-text", (TEXTUAL,), TEXTUAL, job_label="(search queries)", url_default_model=IMMICH_DEFAULT_MODEL,
                 url_entries=lambda name: text_entries(name, {"language": "en"}), text=True),
    ),
)
