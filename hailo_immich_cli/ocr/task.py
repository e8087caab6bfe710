"""OCR as a task: Immich's `ocr` (detection + recognition), served, indexed and benchmarked.

The pipeline is imported on first use, so the registry stays cheap to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hailo_immich_cli.ocr.recipe_keys import RECIPE_KEYS
from hailo_immich_cli.tasks import BenchJob, Task, detector_recognizer

DETECTION, RECOGNITION = "ocr-detection", "ocr-recognition"
# The textScore threshold Immich's server sends by default (server/src/config.ts); used only when a request omits it.
IMMICH_DEFAULT_MIN_REC_SCORE = 0.8
MIN_RESOLUTION = 32
DICTIONARY_METADATA_KEY = "character"  # Immich (RapidOCR) reads the recogniser's characters from this metadata key


def ocr_json(lines: Sequence[Any], width: int, height: int, min_score: float) -> dict[str, Any]:
    """OCR lines (pipeline.OcrLine) as the official service returns them, filtered by textScore > min_score.

    Boxes are normalised by the image size in float32 and flattened TL TR BR BL. Unlike the
    official service, boxScore stays aligned with its box (the official one is left in detector
    order while boxes are re-sorted). Key order differs between "nothing detected" and "detected
    but all filtered out", as in the official service.
    """
    if not lines:
        return {"box": [], "boxScore": [], "text": [], "textScore": []}
    boxes, texts, box_scores, text_scores = [], [], [], []
    size = np.array([np.float32(width), np.float32(height)], dtype=np.float32)
    for line in lines:
        text_score = round(float(line.text_score), 5)
        if not text_score > min_score:
            continue
        quad = np.asarray(line.box, dtype=np.float32).reshape(4, 2) / size
        boxes.extend(np.float32(v) for v in quad.ravel())
        texts.append(str(line.text))
        box_scores.append(np.float32(line.box_score))
        text_scores.append(text_score)
    return {"box": boxes, "text": texts, "boxScore": box_scores, "textScore": text_scores}


def _entries(name: str) -> dict[str, Any]:
    """What Immich's server sends for OCR (its default options)."""
    return {"ocr": {"detection": {"modelName": name, "options": {"minScore": 0.5, "maxResolution": 736}},
                    "recognition": {"modelName": name, "options": {"minScore": IMMICH_DEFAULT_MIN_REC_SCORE}}}}


class OcrTables:
    """`ocr`'s tables: one per image, printed as it finishes."""

    def __init__(self, no_color: bool):
        from rich.console import Console

        self.console = Console(no_color=no_color, highlight=False)

    def add(self, path: Path, result) -> None:
        from rich.markup import escape
        from rich.table import Table

        title = (f"{escape(str(path))}  ({result.width}x{result.height}, {len(result.lines)} lines, "
                 f"{result.detector.recipe_id} + {result.recognizer.recipe_id} on {result.detector.backend})")
        table = Table(title=title, title_justify="left", show_lines=False)
        table.add_column("#", justify="right")
        table.add_column("text")
        table.add_column("text score", justify="right")
        table.add_column("box score", justify="right")
        table.add_column("box (TL, BR)")
        for i, line in enumerate(result.lines, 1):
            (x1, y1), (x2, y2) = line.box[0], line.box[2]
            table.add_row(str(i), escape(line.text), f"{line.text_score:.3f}", f"{line.box_score:.3f}",
                          f"({x1:.0f},{y1:.0f}) ({x2:.0f},{y2:.0f})")
        self.console.print(table)

    def close(self) -> None:
        pass


class OcrTask(Task):
    def input_scale(self, recipe, width: int, height: int, options: Mapping[str, Any]) -> float:
        if recipe.task != DETECTION:
            return 0.0  # line crops come from the decoded image
        max_res = options.get("maxResolution") or recipe.preprocess.get("max_resolution", 736)
        return min(1.0, int(max_res) / min(width, height))

    def serve(self, session, plan, image, text: str | None, outcome, host_path: str = "exact") -> dict[str, Any]:
        from hailo_immich_cli.ocr import pipeline

        det = plan.get(self.immich_task, "detection")
        rec = plan.get(self.immich_task, "recognition")
        assert det is not None and rec is not None and image is not None
        min_rec = rec.options.get("minScore")
        if min_rec is None:
            min_rec = float(session.recipes.get(rec.recipe_id).postprocess.get("min_score", IMMICH_DEFAULT_MIN_REC_SCORE))
        requested = det.options.get("maxResolution")
        if requested is None:
            requested = int(session.recipes.get(det.recipe_id).preprocess.get("max_resolution", 736))
        # The pipeline holds the detector's input to HAILO_IMMICH_OCR_MAX_RESOLUTION (a note for the log line).
        # The pipeline keeps every recognised line (threshold -1); ocr_json filters with strict >,
        # so "nothing detected" and "all filtered out" keep their distinct official key orders.
        # Boxes are answered normalised by the decoded size, so a reduced decode needs no mapping.
        result = pipeline.read_text(
            session,
            image.for_pillow_steps(host_path),
            detector=det.recipe_id,
            recognizer=rec.recipe_id,
            min_det_score=det.options.get("minScore"),
            max_resolution=requested,
            min_rec_score=-1.0,
            host_path=host_path,
        )
        outcome.notes.extend(result.notes)  # said in the request's log line
        outcome.backends[result.detector.recipe_id] = result.detector.backend
        outcome.backends[result.recognizer.recipe_id] = result.recognizer.backend
        # Lines in the official service's order (its sort quirk included); each line keeps its own
        # box score (the official service misaligns them, see ocr_json).
        lines = [line for line, _ in pipeline.immich_response_order(result)]
        return ocr_json(lines, result.width, result.height, min_rec)

    def choose_for_index(self, session, name: str | None, warn: Callable[[str], None]) -> dict[str, Any]:
        from hailo_immich_cli.models.resolve import split_pair

        det, rec = split_pair(name)
        return {DETECTION: session.resolve(DETECTION, det), RECOGNITION: session.resolve(RECOGNITION, rec)}

    def run_for_index(self, session, recipes: Mapping[str, Any], images: Sequence[np.ndarray]) -> list[tuple[Any, str]]:
        from hailo_immich_cli.ocr import pipeline

        out = []
        for rgb in images:
            result = pipeline.read_text(session, rgb, detector=recipes[DETECTION].id, recognizer=recipes[RECOGNITION].id)
            out.append((result, result.detector.backend))
        return out

    def index_rows(self, content: str, out) -> tuple[int, list[tuple[str, list[tuple]]]]:
        """One `ocr_lines` row per line (box in file pixels) and the image's whole text for full-text search."""
        import json

        result, s = out.payload, out.scale
        rows = []
        for idx, line in enumerate(result.lines):
            box = [round(float(v) * s, 2) for v in np.asarray(line.box, dtype=np.float64).reshape(-1)]
            rows.append((content, out.model_id, out.backend, idx, line.text, json.dumps(box),
                         float(line.box_score), float(line.text_score)))
        text = "\n".join(line.text for line in result.lines)
        return len(rows), [
            ("INSERT INTO ocr_lines (hash, model_id, backend, idx, text, box, box_score, text_score) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
             rows),
            ("INSERT INTO ocr_text (hash, model_id, backend, text) VALUES (?, ?, ?, ?)", [(content, out.model_id, out.backend, text)]),
        ]

    def remote_entries(self, name: str) -> dict[str, Any]:
        return _entries(name)

    def parse_remote(self, body: Mapping[str, Any], provenance) -> Any:
        from hailo_immich_cli.ocr.pipeline import OcrLine, OcrResult

        o = body[self.immich_task]
        w, h = int(body["imageWidth"]), int(body["imageHeight"])
        boxes = np.asarray(o.get("box", []), dtype=np.float32).reshape(-1, 4, 2) * np.array([w, h], dtype=np.float32)
        lines = [OcrLine(text=t, box=boxes[i], box_score=float(bs), text_score=float(ts))
                 for i, (t, bs, ts) in enumerate(zip(o["text"], o["boxScore"], o["textScore"]))]
        return OcrResult(lines=lines, width=w, height=h, detector=provenance, recognizer=provenance)

    def cli_record(self, path: Path, result) -> dict[str, Any]:
        """`ocr`'s record of one image: the file, the models (recipe id, backend) and the lines in reading order."""
        return {
            "file": str(path),
            "width": result.width,
            "height": result.height,
            "detector": {"recipe": result.detector.recipe_id, "backend": result.detector.backend, "model_id": result.detector.model_id},
            "recognizer": {"recipe": result.recognizer.recipe_id, "backend": result.recognizer.backend, "model_id": result.recognizer.model_id},
            "lines": [
                {
                    "text": line.text,
                    "box": [[round(float(x), 1), round(float(y), 1)] for x, y in line.box],
                    "box_score": round(line.box_score, 5),
                    "text_score": line.text_score,
                }
                for line in result.lines
            ],
        }

    def cli_table(self, no_color: bool) -> OcrTables:
        return OcrTables(no_color)

    def cli_models(self, result) -> list[Any]:
        return [result.detector, result.recognizer]

    def answer_count(self, value: Mapping[str, Any]) -> int:
        return len(value["text"])

    def path_agreement(self, exact: Mapping[str, Any], fast: Mapping[str, Any]) -> dict[str, Any]:
        """The texts, and the share of exact lines the fast path read identically."""
        et, ft = exact["text"], fast["text"]
        same = sum(1 for t in et if t in ft)
        return {"exact_lines": len(et), "fast_lines": len(ft), "identical": et == ft, "lines_matched": same / len(et) if et else 1.0}

    def cache_names(self, model, all_models: Sequence[Any]) -> list[str]:
        """A detector also answers to every language variant in the cache that uses it: Immich stores
        OCR detectors under the part after the last '__' (EN__PP-OCRv5_mobile -> PP-OCRv5_mobile)."""
        names = [model.name]
        if model.type == "detection":
            names += sorted({m.name for m in all_models if m.task_dir == model.task_dir and m.name != model.name
                             and m.name.split("__")[-1] == model.name})
        return names

    def cache_recipe(self, model, data: dict[str, Any]) -> None:
        super().cache_recipe(model, data)
        if model.type == "recognition":
            data.setdefault("postprocess", {})["dictionary_metadata_key"] = DICTIONARY_METADATA_KEY

    def bench_work(self, job: BenchJob, session, stages: Mapping[str, Any], batch: int,
                   next_image: Callable[[], np.ndarray], next_texts: Callable[[int], list[str]], found: list[int],
                   host_path: str = "exact") -> Callable[[], int]:
        from hailo_immich_cli.ocr.pipeline import read_text

        det, rec = stages[DETECTION].id, stages[RECOGNITION].id

        def work() -> int:
            found.append(len(read_text(session, next_image(), detector=det, recognizer=rec, host_path=host_path).lines))
            return 1

        return work


TASK = OcrTask(
    name="ocr",
    immich_task="ocr",
    **detector_recognizer(DETECTION, RECOGNITION),
    recipe_keys=RECIPE_KEYS,
    immich_enum="OCR",
    immich_default_model="PP-OCRv5_mobile",
    index_tables=("ocr_lines", "ocr_text"),
    stored_tables=("ocr_lines", "ocr_text"),
    cli_lists_failures=True,
    pillow_inputs=(DETECTION,),
    cache_templates={"detection": "ppocrv5-mobile-det-cpu", "recognition": "ppocrv5-mobile-rec-cpu"},
    # The detector's smallest input is one 32-pixel cell (Immich's service fails below about 16): one 422 rule.
    int_options={"detection": {"maxResolution": MIN_RESOLUTION}},
    bench_jobs=(BenchJob("ocr", (DETECTION, RECOGNITION), RECOGNITION, "max_batch_ocr", "MACHINE_LEARNING_MAX_BATCH_SIZE__OCR",
                         "OCR", "PP-OCRv5_mobile", _entries),),
)
